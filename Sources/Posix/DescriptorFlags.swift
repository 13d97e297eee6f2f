#if canImport(Glibc)
import Glibc
#endif

extension Sys {
    /// The file status flags of `fd` (access mode, O_APPEND, O_DIRECT...).
    /// The corresponding C function is `fcntl` with F_GETFL.
    public static func fileStatusFlags(_ fd: Int32) throws(Errno) -> Int32 {
        try retryingEINTR { Glibc.fcntl(fd, F_GETFL) }
    }

    /// Adds O_NONBLOCK to the file status flags of `fd` (shared by every descriptor
    /// of the same open file description). The corresponding C function is `fcntl`.
    public static func setNonBlocking(_ fd: Int32) throws(Errno) {
        let flags = try retryingEINTR { Glibc.fcntl(fd, F_GETFL) }
        if flags & O_NONBLOCK != 0 { return }
        _ = try retryingEINTR { Glibc.fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
    }
}
