import IDTranslation
/// Everything the command line can say, with the defaults the daemon uses when it says nothing.
@dynamicMemberLookup
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
    /// Most request queues offered to the guest (`--num-request-queues`), 1...16. The
    /// default offers 16: the frontend (QEMU's `num-request-queues`, which libvirt sets
    /// from its own settings and never passes to the daemon) decides how many it uses,
    /// and only the queues it enables get a thread.
    public var numRequestQueues: Int = 16

    // MARK: What the guest sees

    /// Caching, extended attributes, locks and the other backend switches; their fields
    /// read as fields of `DaemonOptions` too (`options.cache`).
    public var fileSystem = FileSystemOptions()

    // MARK: Isolation

    public var sandbox: SandboxMode = .namespace
    public var seccomp: SeccompAction = .kill
    /// Changes to the kept capability set (`--modcaps`, `-o modcaps=`), in order.
    public var modcaps: [CapabilityChange] = []
    /// New RLIMIT_NOFILE (`--rlimit-nofile`); nil lets the daemon choose, 0 leaves it unchanged.
    public var rlimitNofile: UInt64? = nil
    /// User-namespace maps (`--uid-map`, `--gid-map`), one entry per range, in order.
    public var uidMap: [IDMap] = []
    public var gidMap: [IDMap] = []
    /// `--translate-uid` rules in order; the table built from them (with the gid rules) is
    /// `fileSystem.idTranslation`.
    public var translateUID: [TranslationRule] = []
    /// `--translate-gid` rules in order.
    public var translateGID: [TranslationRule] = []

    // MARK: Logging and running

    public var logLevel: LogLevel = .info
    public var syslog: Bool = false
    /// Go to the background once the socket listens (`--daemonize`, the C daemon's option).
    public var daemonize: Bool = false
    /// Where the live statistics are served (`--stats=PATH`, a UNIX socket); nil: nowhere.
    public var statsPath: String? = nil
    /// What the parser wants the daemon to log once the logger exists: options accepted
    /// for compatibility that do nothing.
    public var warnings: [String] = []

    public init() {}

    public subscript<T>(dynamicMember path: WritableKeyPath<FileSystemOptions, T>) -> T {
        get { fileSystem[keyPath: path] }
        set { fileSystem[keyPath: path] = newValue }
    }

    public subscript<T>(dynamicMember path: KeyPath<FileSystemOptions, T>) -> T {
        fileSystem[keyPath: path]
    }

    /// Where requests come from; nil only before validation.
    public var endpoint: Endpoint? {
        if let fuseMount { return .fuseMount(fuseMount) }
        if let fd { return .inheritedSocket(fd) }
        if let socketPath { return .socketPath(socketPath, group: socketGroup) }
        return nil
    }
}

/// Where the daemon gets its requests.
public enum Endpoint: Sendable, Equatable {
    case socketPath(String, group: String?)
    case inheritedSocket(Int32)
    case fuseMount(String)
}
