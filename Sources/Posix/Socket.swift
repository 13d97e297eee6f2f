#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

/// Thin wrappers over the socket and polling system calls.
extension Sys {
    /// A new UNIX stream socket, close-on-exec. The corresponding C function is `socket`.
    public static func unixStreamSocket(nonBlocking: Bool = false) throws(Errno) -> Int32 {
        let flags = CVFS_SOCK_STREAM | CVFS_SOCK_CLOEXEC | (nonBlocking ? CVFS_SOCK_NONBLOCK : 0)
        return try checked(Glibc.socket(AF_UNIX, flags, 0))
    }

    /// The corresponding C function is `socketpair` (AF_UNIX, SOCK_STREAM, close-on-exec).
    public static func unixStreamSocketPair() throws(Errno) -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try checked(Glibc.socketpair(AF_UNIX, CVFS_SOCK_STREAM | CVFS_SOCK_CLOEXEC, 0, &fds))
        return (fds[0], fds[1])
    }

    /// Builds a `sockaddr_un` for `path`; ENAMETOOLONG if it does not fit with its NUL.
    public static func unixAddress(_ path: String) throws(Errno) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else {
            throw bytes.count >= capacity ? Errno.nameTooLong : Errno.invalidArgument
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        return address
    }

    /// The corresponding C function is `bind`.
    public static func bind(_ fd: Int32, _ address: sockaddr_un) throws(Errno) {
        var address = address
        _ = try checked(withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        })
    }

    /// The corresponding C function is `connect`.
    public static func connect(_ fd: Int32, _ address: sockaddr_un) throws(Errno) {
        var address = address
        _ = try retryingEINTR {
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
    }

    /// The corresponding C function is `listen`.
    public static func listen(_ fd: Int32, backlog: Int32) throws(Errno) {
        _ = try checked(Glibc.listen(fd, backlog))
    }

    /// A connected socket, close-on-exec. The corresponding C function is `accept4`.
    public static func accept(_ fd: Int32) throws(Errno) -> Int32 {
        try retryingEINTR { cvfs_accept_cloexec(fd) }
    }

    /// Reads an integer socket option. The corresponding C function is `getsockopt`.
    public static func getsockoptInt(_ fd: Int32, level: Int32, name: Int32) throws(Errno) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = try checked(Glibc.getsockopt(fd, level, name, &value, &length))
        return value
    }

    /// The corresponding C function is `unlink`.
    public static func unlink(_ path: String) throws(Errno) {
        _ = try checked(Glibc.unlink(path))
    }

    /// The corresponding C function is `lstat`.
    public static func lstat(_ path: String) throws(Errno) -> stat {
        var st = stat()
        _ = try checked(Glibc.lstat(path, &st))
        return st
    }

    /// Follows symbolic links. The corresponding C function is `stat` (called as
    /// `fstatat(AT_FDCWD, path, &st, 0)`, which is what glibc's `stat` does).
    public static func statPath(_ path: String) throws(Errno) -> stat {
        var st = Glibc.stat()
        _ = try checked(Glibc.fstatat(AT_FDCWD, path, &st, 0))
        return st
    }

    /// Whether this process's real ids may access `path` with `mode` (R_OK, W_OK, X_OK);
    /// on false `Errno.current` says why. The corresponding C function is `access`.
    public static func accessible(_ path: String, _ mode: Int32) -> Bool {
        Glibc.access(path, mode) == 0
    }

    /// The absolute path of `path` with every symbolic link, `.` and `..` resolved.
    /// The corresponding C function is `realpath`.
    public static func realpath(_ path: String) throws(Errno) -> String {
        guard let resolved = Glibc.realpath(path, nil) else { throw Errno.current }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// This process's id. The corresponding C function is `getpid`.
    public static var processID: pid_t { Glibc.getpid() }

    /// The corresponding C function is `rename`.
    public static func rename(_ from: String, _ to: String) throws(Errno) {
        _ = try checked(Glibc.rename(from, to))
    }

    /// The corresponding C function is `chmod`.
    public static func chmod(_ path: String, _ mode: mode_t) throws(Errno) {
        _ = try checked(Glibc.chmod(path, mode))
    }

    /// Changes only the group. The corresponding C function is `chown`.
    public static func chgrp(_ path: String, _ gid: gid_t) throws(Errno) {
        _ = try checked(Glibc.chown(path, uid_t.max, gid))
    }

    /// Sets the process umask, returning the old one. The corresponding C function is `umask`.
    @discardableResult
    public static func umask(_ mask: mode_t) -> mode_t { Glibc.umask(mask) }

    /// Waits until one of `fds` has one of its requested events, or the timeout
    /// passes (negative: forever); fills in each `revents` and returns how many are
    /// ready. The corresponding C function is `poll`.
    public static func poll(_ fds: UnsafeMutableBufferPointer<pollfd>, timeoutMilliseconds: Int32 = -1) throws(Errno) -> Int {
        Int(try retryingEINTR { Glibc.poll(fds.baseAddress, nfds_t(fds.count), timeoutMilliseconds) })
    }

    /// Waits until `fd` or `other` is readable (or hung up, or failed), or the timeout
    /// passes; returns the `revents` of each, both zero on timeout. The daemon's
    /// threads all wait this way: on their work and on a stop or shutdown descriptor.
    public static func pollPair(_ fd: Int32, _ other: Int32, timeoutMilliseconds: Int32 = -1) throws(Errno) -> (Int16, Int16) {
        var pair = (pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                    pollfd(fd: other, events: Int16(POLLIN), revents: 0))
        return try withUnsafeMutableBytes(of: &pair) { (raw) throws(Errno) -> (Int16, Int16) in
            let fds = raw.bindMemory(to: pollfd.self)
            _ = try poll(fds, timeoutMilliseconds: timeoutMilliseconds)
            return (fds[0].revents, fds[1].revents)
        }
    }

    /// Receives stream bytes. The corresponding C function is `read`: `recv` would be
    /// `recvfrom` underneath, which the seccomp allow-list has no other use for.
    public static func recv(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try read(fd, buffer)
    }

    /// Sends all of `buffer` (no SIGPIPE). The corresponding C function is `sendmsg`:
    /// `send` would be `sendto` underneath, which seccomp allows only for syslog.
    public static func sendAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) throws(Errno) {
        var done = 0
        while done < buffer.count {
            let n = try checked(
                cvfs_send_with_fds(fd, buffer.baseAddress.map { $0 + done }, buffer.count - done, nil, 0))
            if n == 0 { throw Errno.ioError }
            done += n
        }
    }
}
