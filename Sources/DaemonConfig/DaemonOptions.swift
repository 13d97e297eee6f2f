/// Everything the command line can say, with the defaults the daemon uses when it says nothing.
///
/// Fields hold what was asked for; the `effective...` / `...Enabled` properties apply the
/// rules that tie options together (xattr implied by ACLs, readdirplus off with `cache=never`,
/// timeouts that follow the cache mode). The daemon reads those, not the raw fields.
public struct DaemonOptions: Sendable, Equatable {
    // MARK: What to share and where to listen

    /// The host directory to share (`--shared-dir`, `-o source=`). Always set in a `.run` outcome.
    public var sharedDir: String? = nil
    /// The device tag (`--tag`); recorded for log lines only: QEMU sets the tag itself.
    public var tag: String? = nil
    /// Create and listen on this UNIX socket (`--socket-path`).
    public var socketPath: String? = nil
    /// Group owner given to the socket (`--socket-group`); only with `socketPath`.
    public var socketGroup: String? = nil
    /// An already listening socket inherited from the caller, e.g. libvirt (`--fd`).
    public var fd: Int32? = nil
    /// Serve a host FUSE mount at this directory instead of vhost-user (`--fuse-mount`).
    public var fuseMount: String? = nil

    // MARK: Threads and queues

    /// Worker pool size (`--thread-pool-size`); 0 means every request runs on its queue thread.
    public var threadPoolSize: Int = 0
    /// Request queues offered to the guest (`--num-request-queues`), 1...16.
    public var numRequestQueues: Int = 1

    // MARK: Caching

    public var cache: CacheMode = .auto
    /// Entry/attribute timeout in seconds (`-o timeout=`); nil means "follow the cache mode".
    public var timeout: Double? = nil
    /// Explicit readdirplus choice; nil means "on unless cache=never".
    public var readdirplus: Bool? = nil
    public var writeback: Bool = false
    public var allowDirectIO: Bool = false
    public var allowMmap: Bool = false

    // MARK: Extended attributes

    public var xattr: Bool = false
    public var posixACL: Bool = false
    public var securityLabel: Bool = false
    /// The `xattrmap` rule string as given; the daemon parses it with `XattrMap`.
    public var xattrmap: String? = nil

    // MARK: File system behaviour

    public var flock: Bool = false
    public var posixLock: Bool = false
    public var announceSubmounts: Bool = true
    public var killprivV2: Bool = true
    public var inodeFileHandles: InodeFileHandlesMode = .never
    public var readOnly: Bool = false
    public var preserveNoatime: Bool = false

    // MARK: Migration (docs/migration.md)

    public var migrationMode: MigrationModeOption = .findPaths
    public var migrationOnError: MigrationErrorOption = .abort
    public var migrationVerifyHandles: Bool = false
    public var migrationConfirmPaths: Bool = false

    // MARK: Isolation

    public var sandbox: SandboxMode = .namespace
    public var seccomp: SeccompAction = .kill
    /// Changes to the kept capability set (`--modcaps`, `-o modcaps=`), in order.
    public var modcaps: [CapabilityChange] = []
    /// New RLIMIT_NOFILE (`--rlimit-nofile`); nil lets the daemon choose, 0 leaves it unchanged.
    public var rlimitNofile: UInt64? = nil
    public var uidMap: [IDMapRange] = []
    public var gidMap: [IDMapRange] = []
    /// `--translate-uid` arguments as given (not parsed: not supported yet).
    public var translateUID: [String] = []
    /// `--translate-gid` arguments as given (not parsed: not supported yet).
    public var translateGID: [String] = []

    // MARK: Logging

    public var logLevel: DaemonLogLevel = .info
    public var syslog: Bool = false

    public init() {}

    // MARK: Derived settings

    /// Extended attributes are served when asked for directly or by an option that needs them.
    public var xattrEnabled: Bool {
        xattr || posixACL || securityLabel || xattrmap != nil
    }

    /// readdirplus, unless turned off or the cache mode is `never` and nobody asked for it.
    public var readdirplusEnabled: Bool {
        readdirplus ?? (cache != .never)
    }

    /// Seconds the guest may cache entries and attributes.
    public var effectiveTimeout: Double {
        timeout ?? cache.defaultTimeout
    }

    /// Where requests come from; nil only before validation.
    public var endpoint: Endpoint? {
        if let fuseMount { return .fuseMount(fuseMount) }
        if let fd { return .inheritedSocket(fd) }
        if let socketPath { return .socketPath(socketPath, group: socketGroup) }
        return nil
    }

    /// Names (as in `notYetSupported`) of unimplemented options this configuration uses;
    /// the daemon refuses to start when this is not empty.
    public var notYetSupportedInUse: [String] {
        var used: [String] = []
        if !translateUID.isEmpty { used.append("translate-uid") }
        if !translateGID.isEmpty { used.append("translate-gid") }
        return used.filter { DaemonOptions.notYetSupported.contains($0) }
    }

    /// Options accepted by the parser whose feature the daemon does not have yet.
    public static let notYetSupported: [String] = ["translate-uid", "translate-gid"]
}

/// Where the daemon gets its requests.
public enum Endpoint: Sendable, Equatable {
    case socketPath(String, group: String?)
    case inheritedSocket(Int32)
    case fuseMount(String)
}

/// How long the guest may trust what it cached.
public enum CacheMode: String, Sendable, Equatable, CaseIterable {
    /// No caching: every access asks the daemon (`never`, also spelled `none`).
    case never
    /// Metadata cached for a day, file data not cached.
    case metadata
    /// Metadata cached for one second; file data kept while the file is open.
    case auto
    /// Everything cached for a day: only safe when nobody else changes the directory.
    case always

    /// The entry/attribute timeout each mode implies.
    public var defaultTimeout: Double {
        switch self {
        case .never: return 0
        case .metadata: return 86400
        case .auto: return 1
        case .always: return 86400
        }
    }
}

public enum SandboxMode: String, Sendable, Equatable, CaseIterable {
    /// New mount, pid and network namespaces with the shared directory as root.
    case namespace
    /// chroot(2) into the shared directory (inside containers, where namespaces are unavailable).
    case chroot
    /// No isolation (tests, unprivileged runs).
    case none
}

/// What seccomp does to a system call that is not on the allow-list.
public enum SeccompAction: String, Sendable, Equatable, CaseIterable {
    /// No filter at all.
    case none
    case kill
    case log
    case trap
}

/// When inodes are held as file handles instead of O_PATH descriptors.
/// `--migration-mode`: how the destination finds the files the guest holds.
public enum MigrationModeOption: String, Sendable, Equatable, CaseIterable {
    case findPaths = "find-paths"
    case fileHandles = "file-handles"
}

/// `--migration-on-error`: what a file that cannot be restored does to the migration.
public enum MigrationErrorOption: String, Sendable, Equatable, CaseIterable {
    case abort
    case guestError = "guest-error"
}

public enum InodeFileHandlesMode: String, Sendable, Equatable, CaseIterable {
    case never
    /// File handles where the file system supports them, descriptors elsewhere.
    case prefer
    /// File handles or fail.
    case mandatory
}

/// Log verbosity, most severe first; mirrors the daemon logger's levels.
public enum DaemonLogLevel: String, Sendable, Equatable, CaseIterable {
    case off
    case error
    case warning
    case info
    case debug
    case trace
}

/// One `+name` or `-name` entry of a capability list.
public struct CapabilityChange: Sendable, Equatable {
    /// true for `+` (keep), false for `-` (drop).
    public var add: Bool
    /// Lower-case capability name without `cap_`, as libcap-ng spells it (`sys_admin`).
    public var name: String
    public init(add: Bool, name: String) {
        self.add = add
        self.name = name
    }
}

/// A `:inside:outside:count:` user-namespace mapping line.
public struct IDMapRange: Sendable, Equatable {
    public var inside: UInt32
    public var outside: UInt32
    public var count: UInt32
    public init(inside: UInt32, outside: UInt32, count: UInt32) {
        self.inside = inside
        self.outside = outside
        self.count = count
    }
}
