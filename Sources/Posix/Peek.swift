#if canImport(Glibc)
import Glibc
#endif

extension Sys {
    /// Waits for the first byte on a connected stream socket without consuming it:
    /// true when data is waiting, false when the peer closed without sending anything.
    /// The corresponding C function is `recvmsg` (with `MSG_PEEK`; `recv` would be
    /// `recvfrom` underneath, which the seccomp allow-list does not have).
    public static func peekForData(_ fd: Int32) throws(Errno) -> Bool {
        var byte: UInt8 = 0
        let n = try withUnsafeMutablePointer(to: &byte) { pointer throws(Errno) -> Int in
            var vector = iovec(iov_base: UnsafeMutableRawPointer(pointer), iov_len: 1)
            return try withUnsafeMutablePointer(to: &vector) { vectorPointer throws(Errno) -> Int in
                var message = msghdr()
                message.msg_iov = vectorPointer
                message.msg_iovlen = 1
                return try retryingEINTR { Glibc.recvmsg(fd, &message, Int32(MSG_PEEK)) }
            }
        }
        return n > 0
    }
}
