/// What one cell (target x operation x depth) measured.
struct CellResult {
    var operations = 0
    var seconds = 0.0
    var bytesPerOperation = 0
    /// Per-operation latencies in nanoseconds.
    var latencies: [UInt64] = []
    var error: String?
    /// The daemon's CPU time (user + system, all its processes) over the run; nil where not measured.
    var cpuNanoseconds: UInt64?

    var cpuMicrosecondsPerOperation: Double? {
        guard let cpu = cpuNanoseconds, operations > 0 else { return nil }
        return Double(cpu) / 1000 / Double(operations)
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
