#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

/// Thin wrappers over the descriptor system calls the daemon uses.
/// Each retries EINTR and throws `Errno`; nothing else in the project calls Glibc for these.
public enum Sys {
    /// The corresponding C function is `close`. EINTR is not retried: Linux has already released the fd.
    @inlinable public static func close(_ fd: Int32) {
        _ = Glibc.close(fd)
    }

    /// The corresponding C function is `openat`.
    @inlinable
    public static func openat(_ dirfd: Int32, _ path: UnsafePointer<CChar>, _ flags: Int32, _ mode: mode_t = 0) throws(Errno) -> Int32 {
        try retryingEINTR { cvfs_openat(dirfd, path, flags | O_CLOEXEC, mode) }
    }

    /// The corresponding C function is `read`.
    @inlinable
    public static func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try retryingEINTR { Glibc.read(fd, buffer.baseAddress, buffer.count) }
    }

    /// The corresponding C function is `write`.
    @inlinable
    public static func write(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(Errno) -> Int {
        try retryingEINTR { Glibc.write(fd, buffer.baseAddress, buffer.count) }
    }

    /// Writes all of `buffer`, looping over short writes.
    public static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(Errno) {
        var done = 0
        while done < buffer.count {
            let n = try write(fd, UnsafeRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 { throw Errno.ioError }
            done += n
        }
    }

    /// The corresponding C function is `preadv`.
    @inlinable
    public static func preadv(_ fd: Int32, _ iov: UnsafeBufferPointer<iovec>, _ offset: Int64) throws(Errno) -> Int {
        try retryingEINTR { Glibc.preadv(fd, iov.baseAddress, Int32(iov.count), off_t(offset)) }
    }

    /// The corresponding C function is `pwritev`.
    @inlinable
    public static func pwritev(_ fd: Int32, _ iov: UnsafeBufferPointer<iovec>, _ offset: Int64) throws(Errno) -> Int {
        try retryingEINTR { Glibc.pwritev(fd, iov.baseAddress, Int32(iov.count), off_t(offset)) }
    }

    /// The corresponding C function is `eventfd`.
    public static func eventfd(initial: UInt32 = 0, flags: Int32 = CVFS_EFD_CLOEXEC) throws(Errno) -> Int32 {
        try checked(cvfs_eventfd(initial, flags))
    }

    /// Adds one to an eventfd counter (the corresponding C function is `write`).
    public static func eventfdSignal(_ fd: Int32) throws(Errno) {
        var one: UInt64 = 1
        _ = try retryingEINTR { Glibc.write(fd, &one, 8) }
    }

    /// Reads and resets an eventfd counter (the corresponding C function is `read`).
    public static func eventfdDrain(_ fd: Int32) throws(Errno) -> UInt64 {
        var value: UInt64 = 0
        _ = try retryingEINTR { Glibc.read(fd, &value, 8) }
        return value
    }

    /// The corresponding C function is `memfd_create`.
    public static func memfdCreate(_ name: String, flags: UInt32 = CVFS_MFD_CLOEXEC) throws(Errno) -> Int32 {
        try checked(cvfs_memfd_create(name, flags))
    }

    /// The corresponding C function is `ftruncate`.
    public static func ftruncate(_ fd: Int32, _ length: Int64) throws(Errno) {
        _ = try retryingEINTR { Glibc.ftruncate(fd, off_t(length)) }
    }

    /// The corresponding C function is `fstat`.
    public static func fstat(_ fd: Int32) throws(Errno) -> stat {
        var st = stat()
        _ = try checked(Glibc.fstat(fd, &st))
        return st
    }
}
