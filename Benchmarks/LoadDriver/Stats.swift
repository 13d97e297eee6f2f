#if canImport(Glibc)
import Glibc
#endif

/// What one cell (target x operation x depth) measured.
struct CellResult {
    var operations = 0
    var seconds = 0.0
    var bytesPerOperation = 0
    /// Per-operation latencies in nanoseconds.
    var latencies: [UInt64] = []
    var error: String?
    /// FUSE requests sent (a multi-request operation counts each), and the CPU time
    /// (user + system) the daemon's process tree spent meanwhile, in clock ticks.
    var requests = 0
    var cpuTicks = 0

    /// Daemon CPU per FUSE request, in microseconds.
    var cpuMicrosecondsPerRequest: Double {
        requests > 0 ? Double(cpuTicks) * 1e6 / Double(sysconf(Int32(_SC_CLK_TCK))) / Double(requests) : 0
    }

    var opsPerSecond: Double { seconds > 0 ? Double(operations) / seconds : 0 }
    var megabytesPerSecond: Double { seconds > 0 ? Double(operations * bytesPerOperation) / seconds / 1e6 : 0 }

    /// The `q` quantile (0...1) in microseconds.
    func quantileMicroseconds(_ q: Double) -> Double {
        guard !latencies.isEmpty else { return 0 }
        let sorted = latencies.sorted()
        let index = min(sorted.count - 1, Int(q * Double(sorted.count - 1) + 0.5))
        return Double(sorted[index]) / 1000
    }
}

/// Fixed-width formatting without Foundation.
func pad(_ s: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - s.count))
    return right ? fill + s : s + fill
}

func fixed(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "-" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = String(Int(rounded))
    if decimals > 0 {
        let frac = Int((abs(rounded) * scale).rounded()) % Int(scale)
        var digits = String(frac)
        while digits.count < decimals { digits = "0" + digits }
        if rounded < 0 && Int(rounded) == 0 { text = "-" + text }
        text += "." + digits
    }
    return text
}
