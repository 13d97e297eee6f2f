// The Options module: every option type and its default, once. The command-line parser
// (DaemonConfig) fills these in; the backends (Passthrough, Sandbox, the logger) read them.
// Pure: no system calls, no dependency but the xattr rule language.

/// How long the guest may trust what it cached, and whether it keeps file data cached.
public enum CacheMode: String, Sendable, Equatable, CaseIterable {
    /// No caching: zero timeouts, direct I/O; every access asks the daemon (`never`, also `none`).
    case never
    /// Metadata cached for a day; file data not cached (direct I/O).
    case metadata
    /// Metadata cached for one second; file data kept while the file is unchanged.
    case auto
    /// Everything cached for a day and the page cache kept across opens: only safe when
    /// nobody else changes the directory.
    case always

    /// The `cache=` spellings: the mode names and "none", the C daemon's name for `never`.
    public static let spellings: [(String, CacheMode)] =
        [("auto", .auto), ("always", .always), ("metadata", .metadata), ("never", .never), ("none", .never)]

    /// Parses a `cache=` value; nil for anything else.
    public init?(option: String) {
        guard let mode = Self.spellings.first(where: { $0.0 == option })?.1 else { return nil }
        self = mode
    }

    /// The entry and attribute timeout (seconds) the mode implies when no `timeout` is given.
    public var defaultTimeout: Double {
        switch self {
        case .never: return 0
        case .metadata: return 86400
        case .auto: return 1
        case .always: return 86400
        }
    }
}

/// How the serving process is isolated from the rest of the host.
public enum SandboxMode: String, Sendable, Equatable, CaseIterable {
    /// New mount, pid and network namespaces (plus a user namespace when not root);
    /// the shared directory becomes the root of the mount namespace.
    case namespace
    /// chroot(2) into the shared directory; needs root (inside containers, where
    /// namespaces are unavailable).
    case chroot
    /// No isolation: only for when an outer sandbox (container, VM) does the job, and tests.
    case none
}

/// What the seccomp filter does with a system call that is not on the allow-list.
public enum SeccompAction: String, Sendable, Equatable, CaseIterable {
    /// No filter at all.
    case none
    /// Kill the whole process (SIGSYS).
    case kill
    /// Let the call through and write an audit record: for finding missing entries.
    case log
    /// Send SIGSYS to the calling thread (debuggers can catch it).
    case trap
}

/// When inodes are held as file handles (name_to_handle_at) rather than O_PATH descriptors.
public enum InodeFileHandlesMode: String, Sendable, Equatable, CaseIterable {
    /// Descriptors, falling back to handles only when the descriptor budget runs low.
    case never
    /// Handles where the file system supports them, descriptors elsewhere.
    case prefer
    /// Handles always; an inode on a file system without handles fails to look up.
    case mandatory

    /// The `--inode-file-handles=` spellings ("fallback" is the older name of "prefer").
    public static let spellings: [(String, InodeFileHandlesMode)] =
        [("never", .never), ("prefer", .prefer), ("fallback", .prefer), ("mandatory", .mandatory)]
}

/// Log verbosity, most severe first.
public enum LogLevel: Int32, Sendable, Comparable, CaseIterable {
    case off = -1
    case error = 0
    case warning = 1
    case info = 2
    case debug = 3
    case trace = 4

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }

    /// The `--log-level` spellings: the C daemon's short names and the long ones.
    public static let spellings: [(String, LogLevel)] =
        [("off", .off), ("err", .error), ("error", .error), ("warn", .warning), ("info", .info),
         ("debug", .debug), ("trace", .trace)]

    /// The name printed in log lines.
    public var label: String {
        switch self {
        case .off: return "off"
        case .error: return "error"
        case .warning: return "warning"
        case .info: return "info"
        case .debug: return "debug"
        case .trace: return "trace"
        }
    }
}
