#if canImport(Glibc)
import Glibc
#endif
import Posix

/// Prints one line to stderr and exits with status 1: every start-up error ends here.
func fail(_ message: String) -> Never {
    var line = "virtiofsd: \(message)\n"
    line.withUTF8 { _ = try? Sys.writeAll(2, UnsafeRawBufferPointer($0)) }
    exit(1)
}

/// Prints `text` (with a final newline) to stdout.
func printOut(_ text: String) {
    var t = text
    if !t.hasSuffix("\n") { t += "\n" }
    t.withUTF8 { _ = try? Sys.writeAll(1, UnsafeRawBufferPointer($0)) }
}

func isDirectory(_ path: String) -> Bool {
    guard let st = try? Sys.statPath(path) else { return false }
    return st.st_mode & S_IFMT == S_IFDIR
}

/// The numeric id of a group named on the command line (a name or a number).
func groupID(_ name: String) -> gid_t? {
    if let number = UInt32(name) { return number }
    guard let entry = getgrnam(name) else { return nil }
    return entry.pointee.gr_gid
}
