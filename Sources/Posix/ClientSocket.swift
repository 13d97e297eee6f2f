#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

/// The client side of a UNIX stream socket: what a vhost-user frontend needs.
extension Sys {
    /// Creates an unconnected `AF_UNIX` stream socket with close-on-exec set.
    /// The corresponding C function is `socket`.
    public static func unixStreamClientSocket() throws(Errno) -> Int32 {
        try checked(Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0))
    }

    /// Connects `fd` to the UNIX socket at `path`. Paths longer than `sun_path` fail with ENAMETOOLONG.
    /// The corresponding C function is `connect`.
    public static func connectUnix(_ fd: Int32, path: String) throws(Errno) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { throw Errno.nameTooLong }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        _ = try retryingEINTR {
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
            }
        }
    }

    /// Sends `buffer` and `fds` (as SCM_RIGHTS) in one message; returns the bytes sent.
    /// The corresponding C function is `sendmsg`.
    public static func sendWithDescriptors(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, descriptors: [Int32]) throws(Errno) -> Int {
        try retryingEINTR {
            descriptors.withUnsafeBufferPointer { fds in
                cvfs_send_with_fds(fd, buffer.baseAddress, buffer.count, fds.baseAddress, Int32(fds.count))
            }
        }
    }

    /// Shuts down both directions of a socket so the peer sees end of file.
    /// The corresponding C function is `shutdown`.
    public static func shutdownBoth(_ fd: Int32) throws(Errno) {
        _ = try checked(Glibc.shutdown(fd, Int32(SHUT_RDWR)))
    }
}
