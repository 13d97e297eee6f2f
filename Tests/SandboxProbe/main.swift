// Enters the sandbox the way the daemon does, reports on stdout, then waits for stdin
// to close so the test can inspect this process from outside.
//
//   sandbox-probe --mode M --share DIR [--seccomp A] [--modcaps S] [--keep-dac]
//                 [--as-uid N] [--uid-map S] [--gid-map S] [--nofile N] [--syslog]
//                 [--open PATH]... [--thread] [--early-thread] [--forbidden] [--verbose]
//                 [--switch-creds ID]
//
// --uid-map and --gid-map may be repeated. --switch-creds does what the daemon does
// around a request of another user: this thread's groups, gid and uid to ID, then back
// to what they were; reported as "switch ID: ok" or "switch ID: <step> <error>".
//
// Each --open is tried after the sandbox is up and reported as "open PATH: ok" or
// "open PATH: <error>", before the ready line.
//
// Exit status: 2 bad arguments, 3 sandbox error (message on stdout as "error: ...").
#if canImport(Glibc)
import Glibc
#endif
import Options
import Posix
import Sandbox

func say(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { try? Sys.writeAll(1, UnsafeRawBufferPointer($0)) }
}

func fail(_ status: Int32, _ message: String) -> Never {
    say("error: " + message)
    exit(status)
}

var mode = SandboxMode.none
var share = ""
var seccomp = SeccompAction.kill
var modcaps = ""
var keepDac = false
var asUID: UInt32?
var uidMap: [IDMap] = []
var gidMap: [IDMap] = []
var switchTo: UInt32?
var nofile: UInt64?
var syslog = false
var forbidden = false
var verbose = false
var opens: [String] = []
var thread = false
var earlyThread = false

var args = CommandLine.arguments.dropFirst()
@MainActor func value(_ option: String) -> String {
    guard let v = args.popFirst() else { fail(2, "\(option) needs a value") }
    return v
}
while let arg = args.popFirst() {
    do throws(IDMapError) {
        switch arg {
        case "--mode": guard let m = SandboxMode(rawValue: value(arg)) else { fail(2, "bad mode") }; mode = m
        case "--share": share = value(arg)
        case "--seccomp": guard let a = SeccompAction(rawValue: value(arg)) else { fail(2, "bad seccomp") }; seccomp = a
        case "--modcaps": modcaps = value(arg)
        case "--keep-dac": keepDac = true
        case "--as-uid": guard let u = UInt32(value(arg)) else { fail(2, "bad uid") }; asUID = u
        case "--uid-map": uidMap.append(try IDMap(parsing: value(arg)))
        case "--gid-map": gidMap.append(try IDMap(parsing: value(arg)))
        case "--switch-creds": guard let u = UInt32(value(arg)) else { fail(2, "bad id") }; switchTo = u
        case "--nofile": guard let n = UInt64(value(arg)) else { fail(2, "bad nofile") }; nofile = n
        case "--syslog": syslog = true
        case "--forbidden": forbidden = true
        case "--verbose": verbose = true
        case "--open": opens.append(value(arg))
        case "--thread": thread = true
        case "--early-thread": earlyThread = true
        default: fail(2, "unknown argument \(arg)")
        }
    } catch {
        fail(3, error.description)
    }
}

// Become an ordinary user first (still single-threaded, so glibc's calls are fine).
if let uid = asUID {
    guard setgroups(0, nil) == 0, setgid(uid) == 0, setuid(uid) == 0 else {
        fail(2, "cannot become uid \(uid): \(Errno.current)")
    }
    // Changing ids marks the process non-dumpable, which makes its /proc files root's;
    // a daemon exec'd as this user would be dumpable, so put that back (PR_SET_DUMPABLE).
    _ = try? Sys.prctl(4, 1)
}

let logger = Logger(label: "sandbox-probe", level: verbose ? .debug : .error)

// A thread that exists before the filter is loaded (mode none only: namespaces need a
// single-threaded process).
var earlyTID = pthread_t()
var earlyGoWrite: Int32 = -1
if earlyThread {
    guard let fds = try? Sys.pipe() else { fail(4, "pipe") }
    earlyThreadGo = fds.read
    earlyGoWrite = fds.write
    guard pthread_create(&earlyTID, nil, earlyThreadBody, nil) == 0 else { fail(4, "pthread_create") }
}
do throws(SandboxError) {
    guard let changes = CapabilityChange.parseList(modcaps) else { fail(2, "bad modcaps") }
    let edits = try Sandboxing.resolve(changes).map(\.change)
    let config = SandboxConfiguration(mode: mode, sharedDirectory: share, seccomp: seccomp, syslog: syslog,
                                      capabilityEdits: edits, keepDacReadSearch: keepDac,
                                      rlimitNofile: nofile, uidMap: uidMap, gidMap: gidMap)
    let limit = try Sandboxing.raiseFileLimit(config, logger: logger)
    let result = try Sandboxing.enter(config, logger: logger)
    try Sandboxing.dropCapabilities(config, logger: logger)
    // Before the filter, as in the daemon, which reads its groups when it opens the share.
    if let id = switchTo { say("switch \(id): \(switchCredentialsAndBack(id))") }
    try Sandboxing.installSeccomp(config, logger: logger)

    // What this process sees from inside, read through the kept /proc/self/fd.
    var selfRoot = "?"
    if let procFD = result.procSelfFD {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlinkat(procFD, "../root", &buffer, buffer.count - 1)
        if n >= 0 { selfRoot = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
    }
    for path in opens {
        do {
            let fd = try Sys.openat(AT_FDCWD, path, O_RDONLY)
            Sys.close(fd)
            say("open \(path): ok")
        } catch {
            say("open \(path): \(error)")
        }
    }
    say("ready root=\(result.root) nofile=\(limit) pid=\(getpid()) uid=\(getuid()) procfd=\(result.procSelfFD.map(String.init) ?? "none") selfroot=\(selfRoot)")
} catch {
    fail(3, error.description)
}

if earlyThread {
    say("releasing-early-thread")
    var byte: UInt8 = 1
    _ = write(earlyGoWrite, &byte, 1)
    pthread_join(earlyTID, nil)
}

if thread {
    // The daemon starts its threads after the filter: creating, running and joining
    // one must stay within the allow-list.
    var tid = pthread_t()
    let rc = pthread_create(&tid, nil, probeThreadBody, nil)
    guard rc == 0 else { fail(4, "pthread_create: \(Errno(rc))") }
    pthread_join(tid, nil)
    say("thread-ok")
}

if forbidden {
    say("calling-forbidden")
    // getppid is on no allow-list: kill ends the process here, log lets it through.
    _ = getppid()
    say("forbidden-returned")
}

// Wait for the test to close stdin.
var byte: UInt8 = 0
while read(0, &byte, 1) > 0 {}
exit(0)

/// The daemon's per-request identity change and its undoing, as in Passthrough's Credentials.
func switchCredentialsAndBack(_ id: UInt32) -> String {
    let uid = Sys.geteuid(), gid = Sys.getegid()
    let groups = (try? Sys.getgroups()) ?? []
    let keep = UInt32.max
    do { try Sys.threadSetgroups([]) } catch { return "setgroups \(error)" }
    do { try Sys.threadSetresgid(keep, id, keep) } catch { return "setresgid \(error)" }
    do { try Sys.threadSetresuid(keep, id, keep) } catch { return "setresuid \(error)" }
    do { try Sys.threadSetresuid(keep, uid, keep) } catch { return "restore uid \(error)" }
    do { try Sys.threadSetresgid(keep, gid, keep) } catch { return "restore gid \(error)" }
    do { try Sys.threadSetgroups(groups) } catch { return "restore groups \(error)" }
    return "ok"
}
