import XattrMap

/// How long the guest kernel may trust what it learnt, and whether it keeps file data cached.
public enum CacheMode: String, Sendable, CaseIterable {
    /// Nothing cached: zero timeouts, direct I/O.
    case never
    /// Metadata cached for a day; file data not cached (direct I/O).
    case metadata
    /// Short (1 s) timeouts; page cache dropped on open when the file changed.
    case auto
    /// Everything cached for a day and the page cache kept across opens.
    case always

    /// Parses the `cache=` option value ("none" is an old name for "never").
    public init?(option: String) {
        switch option {
        case "none", "never": self = .never
        case "metadata": self = .metadata
        case "auto": self = .auto
        case "always": self = .always
        default: return nil
        }
    }

    /// Entry and attribute timeout in seconds when no `timeout` is given.
    public var defaultTimeout: Double {
        switch self {
        case .never: return 0
        case .metadata: return 86400
        case .auto: return 1
        case .always: return 86400
        }
    }
}

/// When inodes are held as file handles (name_to_handle_at) rather than O_PATH descriptors.
public enum InodeFileHandles: String, Sendable {
    /// Descriptors, falling back to handles only when the descriptor budget runs low.
    case never
    /// Handles where the filesystem supports them, descriptors otherwise.
    case prefer
    /// Handles always; an inode on a filesystem without handles fails to look up.
    case mandatory
}

/// What the passthrough backend shares and how. Defaults follow the Rust virtiofsd.
public struct PassthroughConfiguration: Sendable {
    /// The shared directory as the serving process sees it ("/" after pivot_root).
    public var root: String
    /// A directory descriptor of /proc/self/fd opened before a chroot; nil opens it at init.
    public var procSelfFD: Int32?
    public var cache: CacheMode = .auto
    /// Overrides the entry and attribute timeouts of the cache mode (seconds).
    public var timeout: Double? = nil
    public var writeback: Bool = false
    public var xattr: Bool = false
    public var xattrMap: XattrMap? = nil
    public var posixACL: Bool = false
    public var securityLabel: Bool = false
    public var flock: Bool = false
    public var posixLocks: Bool = false
    public var readdirplus: Bool = true
    public var announceSubmounts: Bool = false
    public var killprivV2: Bool = false
    public var allowDirectIO: Bool = false
    /// Let the guest mmap direct-I/O files shared (FUSE_DIRECT_IO_ALLOW_MMAP); only safe
    /// when nothing else changes the files behind the guest's back.
    public var allowMmap: Bool = false
    public var inodeFileHandles: InodeFileHandles = .never
    public var readonly: Bool = false
    public var preserveNoatime: Bool = false
    /// How device state is saved and restored for live migration (Migration.swift).
    public var migration = MigrationOptions()
    /// How many inode descriptors to hold before switching to file handles;
    /// nil derives it from RLIMIT_NOFILE minus a reserve for open files.
    public var fdBudget: Int? = nil
    /// The descriptor limit open files are checked against (EMFILE before the daemon's
    /// own reserve is touched); nil reads RLIMIT_NOFILE at init. Set by tests.
    public var descriptorLimit: Int? = nil
    /// How long a blocking lock request (SETLKW, blocking flock) may hold a queue
    /// thread before the guest gets EINTR and its C library retries.
    var lockWaitLimitNanoseconds = 10_000_000_000

    public init(root: String, procSelfFD: Int32? = nil) {
        self.root = root
        self.procSelfFD = procSelfFD
    }
}
