#if canImport(Glibc)
import Glibc
#endif
import DaemonConfig
import Posix
import Synchronization

/// The daemon's logger once it exists, so fatal errors reach syslog too.
let fatalLogger = Mutex<Logger?>(nil)

/// Prints one line to stderr (and to syslog with --syslog) and exits with status 1:
/// every start-up error ends here.
func fail(_ message: String) -> Never {
    if let logger = fatalLogger.withLock({ $0 }), logger.destination == .syslog {
        logger.error(message)
    }
    printError("virtiofsd: \(message)")
    exit(1)
}

/// Writes `line` and a newline to stderr.
func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = try? Sys.writeAll(2, UnsafeRawBufferPointer($0)) }
}

/// Prints `text` (with a final newline) to stdout.
func printOut(_ text: String) {
    var t = text
    if !t.hasSuffix("\n") { t += "\n" }
    t.withUTF8 { _ = try? Sys.writeAll(1, UnsafeRawBufferPointer($0)) }
}

/// Whether `path` is a directory this process can list and enter.
func checkDirectory(_ path: String) -> DirectoryCheck {
    let st: stat
    do { st = try Sys.statPath(path) } catch {
        return error == .noEntry ? .missing : .inaccessible("\(error)")
    }
    guard (st.st_mode & S_IFMT) == S_IFDIR else { return .notADirectory }
    // access(2) answers for this process's real ids, which is who will serve the share.
    guard Sys.accessible(path, R_OK | X_OK) else { return .inaccessible("\(Errno.current)") }
    return .directory
}

/// The numeric id of a group named on the command line (a name or a number).
func groupID(_ name: String) -> gid_t? {
    if let number = UInt32(name) { return number }
    guard let entry = getgrnam(name) else { return nil }
    return entry.pointee.gr_gid
}
