// virtiofsd-bench: drives a vhost-user virtio-fs daemon the way a guest does and
// compares it with QEMU's C virtiofsd and with plain system calls on the same files.
#if canImport(Glibc)
import Glibc
#endif
import Posix
import VhostUserFrontend

struct Settings {
    var daemon: String?
    var reference = DaemonProcess.referencePath
    var runReference = true
    var seconds = 2.0
    var depths = [1, 16]
    /// Microseconds the driver waits after each completed operation before the next (0: none).
    var paceMicroseconds = 0
    var operations = Operation.allCases
    var daemonArguments: [String] = []
    var footprint = false
}

func usage() -> Never {
    print("""
    usage: virtiofsd-bench [--daemon PATH] [--reference PATH | --no-reference] [--seconds S]
                           [--depths 1,16] [--only OP[,OP...]] [--pace-us N] [--daemon-arg ARG]...
           virtiofsd-bench --footprint [--daemon PATH] [--reference PATH | --no-reference]
    Runs each operation at each depth for S seconds against: our daemon (--daemon),
    the reference daemon, and plain syscalls. --pace-us makes the driver wait N us after each
    completed operation before it starts the next (a guest that is not busy all the time;
    meant for depth 1). CPU us/op is the
    daemon's user+system time (every process of it) per operation. --footprint instead reports each
    daemon's binary size and resident memory, idle and after a frontend connects. Operations: \(Operation.allCases.map(\.rawValue).joined(separator: ", "))
    """)
    exit(2)
}

func parseSettings() -> Settings {
    var settings = Settings()
    var args = CommandLine.arguments.dropFirst()
    func value(_ name: String) -> String {
        guard let v = args.popFirst() else { print("\(name) needs a value"); usage() }
        return v
    }
    while let arg = args.popFirst() {
        switch arg {
        case "--daemon": settings.daemon = value(arg)
        case "--reference": settings.reference = value(arg)
        case "--no-reference": settings.runReference = false
        case "--seconds":
            guard let s = Double(value(arg)), s > 0 else { usage() }
            settings.seconds = s
        case "--depths":
            let depths = value(arg).split(separator: ",").compactMap { Int($0) }
            guard !depths.isEmpty, depths.allSatisfy({ $0 >= 1 && $0 <= VirtioSession.maxDepth }) else {
                print("depths must be 1...\(VirtioSession.maxDepth)"); usage()
            }
            settings.depths = depths
        case "--only":
            let names = value(arg).split(separator: ",").map(String.init)
            let ops = Operation.allCases.filter { op in names.contains { op.rawValue.hasPrefix($0) } }
            guard !ops.isEmpty else { usage() }
            settings.operations = ops
        case "--daemon-arg": settings.daemonArguments.append(value(arg))
        case "--pace-us":
            guard let n = Int(value(arg)), n >= 0 else { print("--pace-us needs a whole number"); usage() }
            settings.paceMicroseconds = n
        case "--footprint": settings.footprint = true
        case "-h", "--help": usage()
        default: print("unknown argument \(arg)"); usage()
        }
    }
    return settings
}

struct Cell: Hashable {
    let operation: Operation
    let depth: Int
}

enum Target: String, CaseIterable {
    case ours, reference, syscalls
}

let settings = parseSettings()
signal(SIGPIPE, SIG_IGN)

var template = Array(((getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp") + "/virtiofsd-bench.XXXXXX").utf8CString)
guard let made = mkdtemp(&template) else {
    print("virtiofsd-bench: cannot create a temporary directory: errno \(errno)")
    exit(1)
}
let workDirectory = String(cString: made)
defer { removeTree(workDirectory) }

let cells = settings.operations.flatMap { op in settings.depths.map { Cell(operation: op, depth: $0) } }
var results: [Target: [Cell: CellResult]] = [:]
var notes: [Target: String] = [:]

@MainActor
func runDaemon(_ target: Target, binary: String, extra: [String]) {
    let label = target.rawValue
    guard access(binary, X_OK) == 0 else {
        notes[target] = "not run: no executable at \(binary)"
        return
    }
    guard Fixture.make(workDirectory + "/\(label)-shared") else {
        notes[target] = "not run: cannot create the fixture"
        return
    }
    var session: VirtioSession?
    var table: [Cell: CellResult] = [:]
    for cell in cells {
        if session == nil {
            do {
                session = try VirtioSession(binary: binary, directory: workDirectory, label: label, extraArguments: extra)
            } catch {
                let log = String(decoding: readAll(workDirectory + "/\(label).log"), as: UTF8.self)
                notes[target] = "FAILED to start or set up \(binary): \(error)" +
                    (log.isEmpty ? "" : "\n    daemon log: " + log.split(separator: "\n").suffix(3).joined(separator: " | "))
                break
            }
        }
        guard let s = session else { break }
        print("  \(pad(label, 10)) \(pad(cell.operation.rawValue, 28)) depth \(pad(String(cell.depth), 2, right: true)) ...", terminator: "")
        fflush(nil)
        let r = s.run(cell.operation, depth: cell.depth, seconds: settings.seconds, paceMicroseconds: settings.paceMicroseconds)
        print(r.error.map { " FAILED: \($0)" } ?? " \(fixed(r.opsPerSecond, 0)) ops/s")
        table[cell] = r
        if r.error != nil || !s.daemon.isRunning {
            // The connection may be unusable; the next cell starts a fresh daemon.
            if !s.daemon.isRunning, let exit = s.daemon.exit { notes[target] = "daemon \(exit) during \(cell.operation.rawValue)" }
            s.close()
            session = nil
        }
    }
    session?.close()
    results[target] = table
}

/// The whole file, or what could be read of it; empty when it cannot be opened.
func readAll(_ path: String) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return bytes
}

if settings.footprint {
    var rows: [(String, FootprintResult)] = []
    if let daemon = settings.daemon {
        rows.append(("ours", measureFootprint(binary: daemon, label: "ours", directory: workDirectory,
                                              extra: settings.daemonArguments)))
    }
    if settings.runReference {
        rows.append(("reference", measureFootprint(binary: settings.reference, label: "reference",
                                                   directory: workDirectory, extra: [])))
    }
    printFootprint(rows)
    removeTree(workDirectory)
    exit(0)
}

print("virtiofsd-bench: \(settings.seconds) s per cell, depths \(settings.depths), \(cells.count) cells per target")
if let daemon = settings.daemon {
    print("ours: \(daemon)")
    runDaemon(.ours, binary: daemon, extra: settings.daemonArguments)
} else {
    notes[.ours] = "not run: pass --daemon PATH"
}
if settings.runReference {
    print("reference: \(settings.reference)")
    runDaemon(.reference, binary: settings.reference, extra: [])
} else {
    notes[.reference] = "not run (--no-reference)"
}
print("syscalls: the same work on the host directory (one thread per request in flight)")
let syscallDirectory = workDirectory + "/syscalls-shared"
if Fixture.make(syscallDirectory) {
    var table: [Cell: CellResult] = [:]
    for cell in cells {
        table[cell] = runSyscalls(cell.operation, depth: cell.depth, seconds: settings.seconds, directory: syscallDirectory)
    }
    results[.syscalls] = table
} else {
    notes[.syscalls] = "not run: cannot create the fixture"
}

// MARK: - Report

print("")
print(pad("operation", 30) + pad("depth", 6, right: true) + "  " + pad("target", 10) + pad("ops/s", 11, right: true)
      + pad("MB/s", 10, right: true) + pad("p50 us", 10, right: true) + pad("p99 us", 10, right: true)
      + pad("CPU us/op", 11, right: true))
print(String(repeating: "-", count: 100))
for cell in cells {
    for target in Target.allCases {
        guard let r = results[target]?[cell] else { continue }
        var line = pad(cell.operation.rawValue, 30) + pad(String(cell.depth), 6, right: true) + "  " + pad(target.rawValue, 10)
        if let e = r.error {
            line += "  FAILED: \(e)"
        } else {
            line += pad(fixed(r.opsPerSecond, 0), 11, right: true)
            line += pad(r.bytesPerOperation > 0 ? fixed(r.megabytesPerSecond, 1) : "-", 10, right: true)
            line += pad(fixed(r.quantileMicroseconds(0.5), 1), 10, right: true)
            line += pad(fixed(r.quantileMicroseconds(0.99), 1), 10, right: true)
            line += pad(r.cpuMicrosecondsPerOperation.map { fixed($0, 1) } ?? "-", 11, right: true)
        }
        print(line)
    }
    func ratio(_ a: Target, _ b: Target) -> String {
        guard let x = results[a]?[cell], let y = results[b]?[cell], x.error == nil, y.error == nil, y.opsPerSecond > 0 else { return "-" }
        return fixed(x.opsPerSecond / y.opsPerSecond, 2)
    }
    print(pad("", 38) + "ours/reference \(ratio(.ours, .reference))   ours/syscalls \(ratio(.ours, .syscalls))"
          + "   reference/syscalls \(ratio(.reference, .syscalls))")
}
for target in Target.allCases {
    if let note = notes[target] { print("\(target.rawValue): \(note)") }
}
