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
    var rust: String?
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
    usage: virtiofsd-bench [--daemon PATH] [--reference PATH | --no-reference] [--rust PATH]
                           [--seconds S] [--depths 1,16] [--only OP[,OP...]] [--pace-us N]
                           [--daemon-arg ARG]...
           virtiofsd-bench --footprint [--daemon PATH] [--reference PATH | --no-reference]
    Runs each operation at each depth for S seconds against: our daemon (--daemon),
    QEMU's C daemon (--reference), the Rust daemon (--rust, when given) and plain
    syscalls, the daemons one after another within each cell, each with a fresh process.
    --pace-us makes the driver wait N us after each completed operation before it starts
    the next (a guest that is not busy all the time; meant for depth 1).
    --footprint instead reports each daemon's binary size and resident memory, idle
    and after a frontend connects. Operations: \(Operation.allCases.map(\.rawValue).joined(separator: ", "))
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
        case "--rust": settings.rust = value(arg)
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
    case ours, reference, rust, syscalls
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
/// VmRSS of each daemon's process tree right after INIT, from its first session (KiB).
var mountedResident: [Target: Int] = [:]

/// A daemon the run compares: where it is and how it is started.
struct DaemonTarget {
    let target: Target
    let binary: String
    let extra: [String]
    var usable = true
}

/// Runs one cell against one daemon, in a fresh process; nil result when it could not start.
@MainActor
func runCell(_ cell: Cell, _ daemon: inout DaemonTarget) {
    let label = daemon.target.rawValue
    guard daemon.usable else { return }
    let session: VirtioSession
    do {
        session = try VirtioSession(binary: daemon.binary, directory: workDirectory, label: label, extraArguments: daemon.extra)
    } catch {
        let log = String(decoding: readAll(workDirectory + "/\(label).log"), as: UTF8.self)
        notes[daemon.target] = "FAILED to start or set up \(daemon.binary): \(error)" +
            (log.isEmpty ? "" : "\n    daemon log: " + log.split(separator: "\n").suffix(3).joined(separator: " | "))
        daemon.usable = false
        return
    }
    if mountedResident[daemon.target] == nil { mountedResident[daemon.target] = session.mountedResidentKiB }
    print("  \(pad(label, 10)) \(pad(cell.operation.rawValue, 28)) depth \(pad(String(cell.depth), 2, right: true)) ...", terminator: "")
    fflush(nil)
    let r = session.run(cell.operation, depth: cell.depth, seconds: settings.seconds,
                        paceMicroseconds: settings.paceMicroseconds)
    print(r.error.map { " FAILED: \($0)" } ?? " \(fixed(r.opsPerSecond, 0)) ops/s")
    results[daemon.target, default: [:]][cell] = r
    if !session.daemon.isRunning, let exit = session.daemon.exit {
        notes[daemon.target] = "daemon \(exit) during \(cell.operation.rawValue)"
    }
    session.close()
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
var daemons: [DaemonTarget] = []
@MainActor
func addDaemon(_ target: Target, _ binary: String?, extra: [String], missing: String) {
    guard let binary else { notes[target] = missing; return }
    guard access(binary, X_OK) == 0 else { notes[target] = "not run: no executable at \(binary)"; return }
    guard Fixture.make(workDirectory + "/\(target.rawValue)-shared") else {
        notes[target] = "not run: cannot create the fixture"; return
    }
    print("\(target.rawValue): \(binary)")
    daemons.append(DaemonTarget(target: target, binary: binary, extra: extra))
}
addDaemon(.ours, settings.daemon, extra: settings.daemonArguments, missing: "not run: pass --daemon PATH")
addDaemon(.reference, settings.runReference ? settings.reference : nil, extra: [], missing: "not run (--no-reference)")
addDaemon(.rust, settings.rust, extra: [], missing: "not run: pass --rust PATH")
print("syscalls: the same work on the host directory (one thread per request in flight)")
let syscallDirectory = workDirectory + "/syscalls-shared"
let syscallsReady = Fixture.make(syscallDirectory)
if !syscallsReady { notes[.syscalls] = "not run: cannot create the fixture" }
// Interleaved: every daemon runs a cell before any runs the next, so a slow
// spell of the machine hits all of them alike.
for cell in cells {
    for index in daemons.indices { runCell(cell, &daemons[index]) }
    if syscallsReady {
        results[.syscalls, default: [:]][cell] = runSyscalls(cell.operation, depth: cell.depth,
                                                             seconds: settings.seconds, directory: syscallDirectory)
    }
}

// MARK: - Report

print("")
print(pad("operation", 30) + pad("depth", 6, right: true) + "  " + pad("target", 10) + pad("ops/s", 11, right: true)
      + pad("MB/s", 10, right: true) + pad("p50 us", 10, right: true) + pad("p99 us", 10, right: true)
      + pad("CPU us/req", 12, right: true))
print(String(repeating: "-", count: 101))
for cell in cells {
    for target in Target.allCases {
        guard let r = results[target]?[cell] else { continue }
        var line = pad(cell.operation.rawValue, 30) + pad(String(cell.depth), 6, right: true) + "  " + pad(target.rawValue, 10)
        if let e = r.error {
            line += "  FAILED: \(e)"
        } else {
            // Whole listings are few per second: a decimal keeps their ratios meaningful.
            line += pad(fixed(r.opsPerSecond, r.opsPerSecond < 100 ? 1 : 0), 11, right: true)
            line += pad(r.bytesPerOperation > 0 ? fixed(r.megabytesPerSecond, 1) : "-", 10, right: true)
            line += pad(fixed(r.quantileMicroseconds(0.5), 1), 10, right: true)
            line += pad(fixed(r.quantileMicroseconds(0.99), 1), 10, right: true)
            line += pad(target == .syscalls ? "-" : fixed(r.cpuMicrosecondsPerRequest, 1), 12, right: true)
        }
        print(line)
    }
    func ops(_ t: Target) -> Double? {
        guard let x = results[t]?[cell], x.error == nil, x.opsPerSecond > 0 else { return nil }
        return x.opsPerSecond
    }
    func ratio(_ a: Double?, _ b: Double?) -> String {
        guard let a, let b else { return "-" }
        return fixed(a / b, 2)
    }
    let best = [ops(.reference), ops(.rust)].compactMap { $0 }.max()
    print(pad("", 38) + "ours/best-other \(ratio(ops(.ours), best))   ours/reference \(ratio(ops(.ours), ops(.reference)))"
          + "   ours/rust \(ratio(ops(.ours), ops(.rust)))   ours/syscalls \(ratio(ops(.ours), ops(.syscalls)))")
}
if !mountedResident.isEmpty {
    print("")
    print("memory right after mount (VmRSS summed over the daemon's process tree, after FUSE INIT):")
    for target in Target.allCases {
        if let kib = mountedResident[target] { print("  \(pad(target.rawValue, 10)) \(fixed(Double(kib) / 1024, 1)) MiB") }
    }
}
for target in Target.allCases {
    if let note = notes[target] { print("\(target.rawValue): \(note)") }
}
