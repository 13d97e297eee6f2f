#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// Why the listening socket could not be set up.
public enum ListenerError: Error, Equatable, CustomStringConvertible {
    case pathTooLong(String)
    case anotherDaemonListening(String)
    case notASocket(String)
    case step(String, path: String, Errno)
    case notAListeningSocket(fd: Int32, reason: String)

    public var description: String {
        switch self {
        case .pathTooLong(let p):
            return "socket path \(p) is too long for a UNIX socket (at most 107 bytes)"
        case .anotherDaemonListening(let p):
            return "another daemon is listening on \(p)"
        case .notASocket(let p):
            return "\(p) exists and is not a socket; refusing to replace it"
        case .step(let step, let p, let e):
            return "cannot \(step) socket \(p): \(e)"
        case .notAListeningSocket(let fd, let reason):
            return "--fd=\(fd): \(reason)"
        }
    }
}

/// The UNIX socket QEMU connects to. One frontend at a time.
public enum Listener {
    /// Creates, binds and listens on a UNIX socket at `path`, mode 0600 (or 0660
    /// owned by `group` when given). A stale socket file is replaced; a live one
    /// (something accepts connections) is an error. Creates nothing else.
    public static func bindSocket(path: String, group: gid_t? = nil) throws(ListenerError) -> Int32 {
        let address: sockaddr_un
        do {
            address = try Sys.unixAddress(path)
        } catch {
            throw error == .nameTooLong ? .pathTooLong(path) : .step("use", path: path, error)
        }
        if let st = try? Sys.lstat(path) {
            guard st.st_mode & S_IFMT == S_IFSOCK else { throw .notASocket(path) }
            if isSomeoneListening(address) { throw .anotherDaemonListening(path) }
            do { try Sys.unlink(path) } catch { throw .step("remove stale", path: path, error) }
        }
        // Bind under a temporary name beside the final one and rename it into place
        // once listening, so a frontend that sees the socket file never gets
        // ECONNREFUSED. A path too long for the temporary name is bound directly.
        let temporary = "\(path).\(Sys.processID).tmp"
        let bindPath: String
        let bindAddress: sockaddr_un
        if let t = try? Sys.unixAddress(temporary) {
            bindPath = temporary
            bindAddress = t
            try? Sys.unlink(temporary)
        } else {
            bindPath = path
            bindAddress = address
        }
        let fd: Int32
        do { fd = try Sys.unixStreamSocket() } catch { throw .step("create", path: path, error) }
        do throws(ListenerError) {
            // The socket file appears with the umask's mode: keep it private from the start.
            let oldMask = Sys.umask(0o177)
            do { try Sys.bind(fd, bindAddress) } catch {
                Sys.umask(oldMask)
                throw .step("bind", path: path, error)
            }
            Sys.umask(oldMask)
            if let group {
                do { try Sys.chgrp(bindPath, group) } catch { throw .step("set the group of", path: path, error) }
                do { try Sys.chmod(bindPath, 0o660) } catch { throw .step("set the mode of", path: path, error) }
            }
            do { try Sys.listen(fd, backlog: 1) } catch { throw .step("listen on", path: path, error) }
            if bindPath != path {
                do { try Sys.rename(bindPath, path) } catch { throw .step("rename the socket into", path: path, error) }
            }
        } catch {
            Sys.close(fd)
            if bindPath != path { try? Sys.unlink(bindPath) }
            throw error
        }
        return fd
    }

    private static func isSomeoneListening(_ address: sockaddr_un) -> Bool {
        // Non-blocking, so a listener with a full backlog answers EAGAIN instead of hanging us.
        guard let probe = try? Sys.unixStreamSocket(nonBlocking: true) else { return false }
        defer { Sys.close(probe) }
        do {
            try Sys.connect(probe, address)
            return true
        } catch {
            // ECONNREFUSED: a socket file nobody listens on any more.
            return error != Errno(ECONNREFUSED) && error != .noEntry
        }
    }

    /// Checks that an inherited fd (libvirt's `--fd=N`) is a listening UNIX stream socket.
    public static func adopt(fd: Int32) throws(ListenerError) -> Int32 {
        func option(_ level: Int32, _ name: Int32, _ what: String) throws(ListenerError) -> Int32 {
            do {
                return try Sys.getsockoptInt(fd, level: level, name: name)
            } catch {
                switch error {
                case .badFileDescriptor:
                    throw .notAListeningSocket(fd: fd, reason: "descriptor \(fd) is not open; whoever starts the daemon must pass it a listening UNIX socket there")
                case Errno(ENOTSOCK):
                    throw .notAListeningSocket(fd: fd, reason: "descriptor \(fd) is not a socket; it must be a listening UNIX stream socket")
                default:
                    throw .notAListeningSocket(fd: fd, reason: "reading the socket's \(what): \(error)")
                }
            }
        }
        guard try option(SOL_SOCKET, CVFS_SO_DOMAIN, "domain") == AF_UNIX else {
            throw .notAListeningSocket(fd: fd, reason: "descriptor \(fd) is not a UNIX socket")
        }
        guard try option(SOL_SOCKET, SO_TYPE, "type") == CVFS_SOCK_STREAM else {
            throw .notAListeningSocket(fd: fd, reason: "descriptor \(fd) is not a stream socket")
        }
        guard try option(SOL_SOCKET, SO_ACCEPTCONN, "listening state") != 0 else {
            throw .notAListeningSocket(fd: fd, reason: "socket \(fd) is not listening (call listen(2) before passing it)")
        }
        return fd
    }

    /// Waits for one frontend; nil when `shutdownFD` became readable first.
    public static func acceptOne(listenFD: Int32, shutdownFD: Int32) throws(Errno) -> Int32? {
        while true {
            let (connection, shutdown) = try Sys.pollPair(listenFD, shutdownFD)
            if shutdown != 0 { return nil }
            if connection != 0 { return try Sys.accept(listenFD) }
        }
    }
}
