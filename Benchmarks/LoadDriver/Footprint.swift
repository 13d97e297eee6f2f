#if canImport(Glibc)
import Glibc
#endif
import Posix
import VhostUserFrontend

/// Memory of one process, from /proc/PID/status.
struct ProcessMemory {
    var pid: pid_t
    /// Resident set (VmRSS) and peak (VmHWM), in KiB.
    var rssKiB: Int
    var peakKiB: Int
    var threads: Int
}

/// Reads /proc/PID/status fields; nil if the process is gone.
func processMemory(_ pid: pid_t) -> ProcessMemory? {
    let bytes = readAll("/proc/\(pid)/status")
    guard !bytes.isEmpty else { return nil }
    var memory = ProcessMemory(pid: pid, rssKiB: 0, peakKiB: 0, threads: 0)
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
        let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count >= 2, let value = Int(fields[1]) else { continue }
        switch fields[0] {
        case "VmRSS:": memory.rssKiB = value
        case "VmHWM:": memory.peakKiB = value
        case "Threads:": memory.threads = value
        default: break
        }
    }
    return memory
}

/// `root` and its descendants, parents first (from the ppid in /proc/PID/stat).
func processTree(_ root: pid_t) -> [pid_t] {
    var parentOf: [pid_t: pid_t] = [:]
    if let dir = opendir("/proc") {
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let pid = pid_t(name) else { continue }
            let stat = readAll("/proc/\(pid)/stat")
            // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
            let text = String(decoding: stat, as: UTF8.self)
            guard let close = text.lastIndex(of: ")") else { continue }
            let rest = text[text.index(after: close)...].split(separator: " ")
            if rest.count >= 2, let ppid = pid_t(rest[1]) { parentOf[pid] = ppid }
        }
    }
    var tree = [root]
    var index = 0
    while index < tree.count {
        let parent = tree[index]
        tree += parentOf.filter { $0.value == parent }.map(\.key).sorted()
        index += 1
    }
    return tree
}

/// What `--footprint` reports for one daemon.
struct FootprintResult {
    var binaryBytes = 0
    var idle: [ProcessMemory] = []
    var connected: [ProcessMemory] = []
    var error: String?
}

/// Starts `binary`, samples the memory of its process tree while it waits for a
/// frontend, then again one second after the vhost-user handshake and FUSE INIT.
/// The serving process is the last one in the tree (the sandbox's child, if it forks).
func measureFootprint(binary: String, label: String, directory: String, extra: [String]) -> FootprintResult {
    var result = FootprintResult()
    var st = stat()
    if stat(binary, &st) == 0 { result.binaryBytes = Int(st.st_size) }
    guard Fixture.make(directory + "/\(label)-shared") else {
        result.error = "cannot create the fixture"
        return result
    }
    let daemon: DaemonProcess
    do {
        daemon = try DaemonProcess(binary: binary, socketPath: directory + "/\(label).sock",
                                   sharedDirectory: directory + "/\(label)-shared",
                                   logPath: directory + "/\(label).log", extraArguments: extra)
    } catch {
        result.error = "\(error)"
        return result
    }
    defer { _ = daemon.stop() }
    usleep(500_000)
    result.idle = processTree(daemon.pid).compactMap(processMemory)
    do throws(FrontendError) {
        let frontend = try VhostUserFrontend(socketPath: daemon.socketPath, memorySize: 128 << 20)
        defer { frontend.close() }
        try frontend.handshake()
        let fuse = try FuseClient(frontend: frontend, slots: 1, maxData: 1 << 20)
        try fuse.initialize()
        usleep(1_000_000)
        result.connected = processTree(daemon.pid).compactMap(processMemory)
    } catch {
        result.error = "\(error)"
    }
    return result
}

func printFootprint(_ rows: [(String, FootprintResult)]) {
    func mib(_ kib: Int) -> String { fixed(Double(kib) / 1024, 1) }
    print(pad("target", 11) + pad("binary MB", 11, right: true) + pad("processes", 11, right: true)
          + pad("idle RSS MiB", 14, right: true) + pad("connected RSS MiB", 19, right: true)
          + pad("threads", 9, right: true))
    print(String(repeating: "-", count: 75))
    for (label, r) in rows {
        if let e = r.error, r.connected.isEmpty {
            print(pad(label, 11) + "  FAILED: \(e)")
            continue
        }
        // The serving process: the deepest of the tree (the forked child under a namespace sandbox).
        let idle = r.idle.last.map { mib($0.rssKiB) } ?? "-"
        let connected = r.connected.last.map { mib($0.rssKiB) } ?? "-"
        print(pad(label, 11) + pad(fixed(Double(r.binaryBytes) / 1e6, 1), 11, right: true)
              + pad(String(r.connected.count), 11, right: true) + pad(idle, 14, right: true)
              + pad(connected, 19, right: true) + pad(String(r.connected.last?.threads ?? 0), 9, right: true))
        for p in r.connected.dropLast() {
            print(pad("", 11) + "  also pid \(p.pid) (parent/helper): \(mib(p.rssKiB)) MiB RSS")
        }
    }
    print("RSS is VmRSS of the serving process from /proc/PID/status, idle = listening with no")
    print("frontend, connected = 1 s after the vhost-user handshake and FUSE INIT.")
}

/// User plus system CPU time of `pid` (all its threads), in clock ticks; 0 if it is gone.
func processCPUTicks(_ pid: pid_t) -> Int {
    let text = String(decoding: readAll("/proc/\(pid)/stat"), as: UTF8.self)
    // "pid (comm) state ppid ...": utime and stime are fields 14 and 15, the 12th and
    // 13th after the comm's closing parenthesis.
    guard let close = text.lastIndex(of: ")") else { return 0 }
    let rest = text[text.index(after: close)...].split(separator: " ")
    guard rest.count > 12, let user = Int(rest[11]), let system = Int(rest[12]) else { return 0 }
    return user + system
}

/// CPU ticks of `root`'s whole process tree (the namespace sandbox's parent and its child).
func treeCPUTicks(_ root: pid_t) -> Int {
    processTree(root).reduce(0) { $0 + processCPUTicks($1) }
}

/// VmRSS of `root`'s whole process tree, in KiB.
func treeResidentKiB(_ root: pid_t) -> Int {
    processTree(root).compactMap(processMemory).reduce(0) { $0 + $1.rssKiB }
}
