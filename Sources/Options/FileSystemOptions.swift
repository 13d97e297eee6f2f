import IDTranslation
import XattrMap

/// What the guest sees of the shared directory: caching, extended attributes, locks and
/// the other behaviour switches. The parser fills it in; the passthrough backend reads it.
///
/// Fields hold what was asked for; the `effective...` / `...Enabled` properties apply the
/// rules that tie options together (xattr implied by ACLs, labels or a map, readdirplus off
/// with `cache=never`, timeouts that follow the cache mode). The backend reads those.
public struct FileSystemOptions: Sendable, Equatable {
    public var cache: CacheMode = .auto
    /// Entry/attribute timeout in seconds (`-o timeout=`); nil means "follow the cache mode".
    public var timeout: Double? = nil
    /// Explicit readdirplus choice; nil means "on unless cache=never".
    public var readdirplus: Bool? = nil
    public var writeback: Bool = false
    /// Honour O_DIRECT from the guest (`--allow-direct-io`).
    public var allowDirectIO: Bool = false
    /// Let the guest mmap direct-I/O files shared (FUSE_DIRECT_IO_ALLOW_MMAP); only safe
    /// when nothing else changes the files behind the guest's back.
    public var allowMmap: Bool = false

    public var xattr: Bool = false
    public var posixACL: Bool = false
    public var securityLabel: Bool = false
    /// The parsed `xattrmap` rules; nil serves names unchanged.
    public var xattrMap: XattrMap? = nil
    /// `--translate-uid` / `--translate-gid`, parsed and checked; nil (or rules that change
    /// nothing) leaves every id as it is.
    public var idTranslation: IDTranslations? = nil

    public var flock: Bool = false
    public var posixLocks: Bool = false
    /// Tell the guest about host mount points inside the share (FUSE_SUBMOUNTS).
    public var announceSubmounts: Bool = true
    /// Let the guest delegate clearing setuid/setgid/capabilities on write and truncate
    /// (FUSE_HANDLE_KILLPRIV_V2).
    public var killprivV2: Bool = true
    public var inodeFileHandles: InodeFileHandlesMode = .never
    public var readOnly: Bool = false
    /// Keep the guest's O_NOATIME instead of dropping it.
    public var preserveNoatime: Bool = false
    /// How the device state is saved and restored for live migration.
    public var migration = MigrationOptions()

    public init() {}

    /// Extended attributes are served when asked for directly or by an option that needs them.
    public var xattrEnabled: Bool {
        xattr || posixACL || securityLabel || xattrMap != nil
    }

    /// readdirplus, unless turned off, or the cache mode is `never` and nobody asked for it.
    public var readdirplusEnabled: Bool {
        readdirplus ?? (cache != .never)
    }

    /// Seconds the guest may cache entries and attributes.
    public var effectiveTimeout: Double {
        timeout ?? cache.defaultTimeout
    }
}
