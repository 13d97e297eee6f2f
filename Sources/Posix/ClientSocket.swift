#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

/// The client side of a UNIX stream socket: what a vhost-user frontend needs.
extension Sys {
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
