#if canImport(Glibc)
import Glibc
#endif

/// Starting, signalling and reaping child processes, plus waiting and timing
/// helpers that tools driving a daemon need.
extension Sys {
    /// Starts `path` with `arguments` (argv[1...]); stdin is /dev/null, stdout and
    /// stderr go to `outputPath` (created or truncated). Returns the child's pid.
    /// The corresponding C function is `posix_spawn`.
    public static func spawnProcess(_ path: String, arguments: [String], outputPath: String) throws(Errno) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)

        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, nil, argv, environ)
        if result != 0 { throw Errno(result) }
        return pid
    }

    /// Starts `path` with `arguments` (argv[1...]) sharing this process's stdin, stdout
    /// and stderr, so a helper tool's own error messages reach the user. Returns the pid.
    /// The corresponding C function is `posix_spawn`.
    public static func spawnInheritingOutput(_ path: String, arguments: [String]) throws(Errno) -> pid_t {
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, nil, nil, argv, environ)
        if result != 0 { throw Errno(result) }
        return pid
    }

    /// Reaps `pid` if it has exited; nil while it still runs (`WNOHANG` when `block` is false).
    /// Returns the raw wait status. Goes through `waitpid(_:options:)`.
    public static func waitProcess(_ pid: pid_t, block: Bool) throws(Errno) -> Int32? {
        let (reaped, status) = try waitpid(pid, options: block ? 0 : WNOHANG)
        return reaped == 0 ? nil : status
    }

    /// Sends `signal` to `pid`. Goes through `kill(_:_:)`.
    public static func signalProcess(_ pid: pid_t, _ signal: Int32) throws(Errno) {
        try kill(pid, signal)
    }

    /// Waits until one of `fds` is readable (or hung up); returns the revents per fd,
    /// all zero on timeout.
    public static func pollReadable(_ fds: [Int32], timeoutMilliseconds: Int32) throws(Errno) -> [Int16] {
        var entries = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        _ = try entries.withUnsafeMutableBufferPointer { (p) throws(Errno) -> Int in
            try poll(p, timeoutMilliseconds: timeoutMilliseconds)
        }
        return entries.map { $0.revents }
    }

    /// Nanoseconds on the monotonic clock. The corresponding C function is `clock_gettime`.
    @inlinable
    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// Decoded `waitpid` status.
public enum ProcessExit: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signalled(Int32)

    public init(waitStatus status: Int32) {
        // WIFEXITED / WTERMSIG are macros Swift cannot import; these are their Linux definitions.
        if status & 0x7f == 0 {
            self = .exited((status >> 8) & 0xff)
        } else {
            self = .signalled(status & 0x7f)
        }
    }

    public var description: String {
        switch self {
        case .exited(let code): return "exited with status \(code)"
        case .signalled(let signal): return "killed by signal \(signal)"
        }
    }
}
