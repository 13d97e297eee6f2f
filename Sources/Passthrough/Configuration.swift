import Options

/// What the passthrough backend shares and how.
@dynamicMemberLookup
public struct PassthroughConfiguration: Sendable {
    /// The shared directory as the serving process sees it ("/" after pivot_root).
    public var root: String
    /// A directory descriptor of /proc/self/fd opened before a chroot; nil opens it at init.
    public var procSelfFD: Int32?
    /// Caching, xattrs, locks and the other switches, with the daemon's defaults; their
    /// fields read as fields of the configuration (`configuration.cache`).
    public var options = FileSystemOptions()
    /// How many inode descriptors to hold before switching to file handles;
    /// nil derives it from RLIMIT_NOFILE minus a reserve for open files.
    public var fdBudget: Int? = nil
    /// The descriptor limit open files are checked against (EMFILE before the daemon's
    /// own reserve is touched); nil reads RLIMIT_NOFILE at init. Set by tests.
    public var descriptorLimit: Int? = nil
    /// Most SETLKW requests parked at once (ENOLCK beyond); smaller in tests.
    var maxLockWaits = LockWaits.defaultLimit

    /// Shares `root` with the daemon's defaults.
    public init(root: String, procSelfFD: Int32? = nil) {
        self.root = root
        self.procSelfFD = procSelfFD
    }

    public subscript<T>(dynamicMember path: WritableKeyPath<FileSystemOptions, T>) -> T {
        get { options[keyPath: path] }
        set { options[keyPath: path] = newValue }
    }

    public subscript<T>(dynamicMember path: KeyPath<FileSystemOptions, T>) -> T {
        options[keyPath: path]
    }
}
