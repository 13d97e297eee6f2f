#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import IDTranslation
import Posix
import Synchronization
import Options
import XattrMap

/// Marks threads that have their own working directory (for path-based xattr calls).
/// One key for the process: keys are a limited resource.
private let privateCWDKey: pthread_key_t? = try? Sys.threadKeyCreate()

/// The `FileSystem` that serves a host directory: every guest node is a host
/// file held as an O_PATH descriptor (or a file handle), every name is resolved
/// one component at a time from its parent's descriptor, and files are opened
/// for I/O through /proc/self/fd so no guest-made symlink is ever followed.
public final class PassthroughFileSystem: FileSystem {
    let configuration: PassthroughConfiguration
    let logger: Logger
    let procSelfFD: Int32
    let root: InodeData
    let inodes: InodeStore
    let handles = Mutex(HandleTable())
    let descriptorCount = DescriptorCount()
    let fdBudget: Int
    /// RLIMIT_NOFILE as seen at start (or the configured stand-in, for tests).
    let descriptorLimit: Int
    let credentials: Credentials
    /// Guest/host id translation; nil when there are no rules.
    let idTranslation: IDTranslations?
    /// SETLKW requests waiting for their lock.
    let lockWaits: LockWaits
    /// The INIT flags in force after negotiation.
    let negotiated = Atomic<UInt64>(0)
    let timeout: Timeout
    let useOpenat2: Bool
    /// The xattr name rules, if any.
    let xattrNames: (any XattrNameMapping)?
    /// The host name `security.capability` is stored under when the rules rename it (NUL-terminated).
    let remappedCapabilityName: [CChar]?

    /// Opens the shared directory (as O_PATH) and, unless the configuration gives one,
    /// /proc/self/fd; probes openat2; sets the process umask to 0, since the guest's modes
    /// arrive with its umask applied. Throws the errno of the step that failed.
    public convenience init(configuration: PassthroughConfiguration, logger: Logger) throws(Errno) {
        try self.init(configuration: configuration, logger: logger, xattrNames: configuration.xattrMap)
    }

    init(configuration: PassthroughConfiguration, logger: Logger, xattrNames: (any XattrNameMapping)?) throws(Errno) {
        self.configuration = configuration
        self.logger = logger
        self.xattrNames = xattrNames
        idTranslation = configuration.idTranslation.flatMap { $0.isIdentity ? nil : $0 }
        credentials = Credentials(translation: idTranslation)
        lockWaits = LockWaits(logger: logger, limit: configuration.maxLockWaits)
        if let xattrNames,
           case .rename(let bytes) = Array("security.capability".utf8).withUnsafeBufferPointer({ xattrNames.mapClientName($0) }) {
            remappedCapabilityName = bytes.map { CChar(bitPattern: $0) } + [0]
        } else {
            remappedCapabilityName = nil
        }
        if let limit = configuration.descriptorLimit {
            descriptorLimit = limit
        } else {
            descriptorLimit = Int(clamping: try Sys.getrlimit(Int32(RLIMIT_NOFILE.rawValue)).rlim_cur)
        }
        if let budget = configuration.fdBudget {
            fdBudget = max(0, budget)
        } else {
            // Keep a reserve for open files, directories and the transport.
            fdBudget = max(0, descriptorLimit - max(64, descriptorLimit / 4))
        }
        timeout = Timeout(configuration.effectiveTimeout)
        guard privateCWDKey != nil else { throw Errno.noMemory }

        let ownProcSelfFD = configuration.procSelfFD == nil
        if let given = configuration.procSelfFD {
            procSelfFD = given
        } else {
            procSelfFD = try Sys.openat(AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY)
        }
        let rootFD: Int32
        let identity: (stat, UInt64)
        do throws(Errno) {
            rootFD = try Sys.openat(AT_FDCWD, configuration.root, CVFS_O_PATH | O_DIRECTORY)
            do {
                identity = try Sys.statxIdentity(rootFD, "", flags: CVFS_AT_EMPTY_PATH | CVFS_AT_SYMLINK_NOFOLLOW)
            } catch {
                Sys.close(rootFD)
                throw error
            }
        } catch {
            if ownProcSelfFD { Sys.close(procSelfFD) }
            throw error
        }
        let key = InodeKey(identity.0, mountID: identity.1)
        root = InodeData(key: key, fileType: identity.0.st_mode & S_IFMT, fd: rootFD, count: descriptorCount)
        // openat2 with RESOLVE_BENEATH is the stronger check where the kernel has it.
        if let probe = try? Sys.openat2(rootFD, ".", flags: CVFS_O_PATH, resolve: CVFS_RESOLVE_BENEATH) {
            Sys.close(probe)
            useOpenat2 = true
        } else {
            useOpenat2 = false
        }
        inodes = InodeStore(root: root)
        // open_by_handle_at needs a real descriptor on the mount; the root's serves its mount.
        if let rootMountFD = try? Sys.openat(rootFD, ".", O_RDONLY | O_DIRECTORY) {
            inodes.mountFDs.withLock { $0[key.mountID] = rootMountFD }
        }
        // The guest's mode arrives with its umask already applied (or applied by us with DONT_MASK).
        Sys.umask(0)
        logger.debug("passthrough: sharing \(configuration.root), cache \(configuration.cache.rawValue), descriptor budget \(fdBudget), openat2 \(useOpenat2 ? "yes" : "no")")
    }

    deinit {
        if configuration.procSelfFD == nil { Sys.close(procSelfFD) }
        for (_, fd) in inodes.mountFDs.withLock({ $0 }) { Sys.close(fd) }
    }

    // MARK: - Shared helpers: negotiation, read-only, reaching a file through /proc/self/fd

    func isNegotiated(_ flag: InitFlags) -> Bool {
        InitFlags(rawValue: negotiated.load(ordering: .relaxed)).contains(flag)
    }

    func ensureWritable() throws(Errno) {
        if configuration.readOnly { throw Errno.readOnlyFileSystem }
    }

    /// Formats `fd` as the decimal name of its /proc/self/fd entry.
    func withProcName<T>(_ fd: Int32, _ body: (UnsafePointer<CChar>) throws(Errno) -> T) throws(Errno) -> T {
        var digits: (UInt64, UInt64) = (0, 0) // 16 bytes: enough for any Int32 and a NUL
        return try withUnsafeMutableBytes(of: &digits) { (raw) throws(Errno) -> T in
            // Count the digits, then fill them from the end; no allocation on this hot path.
            var length = 1
            var probe = UInt32(bitPattern: fd) / 10
            while probe > 0 { length += 1; probe /= 10 }
            var value = UInt32(bitPattern: fd)
            for index in stride(from: length - 1, through: 0, by: -1) {
                raw[index] = UInt8(48 + value % 10)
                value /= 10
            }
            raw[length] = 0
            return try body(raw.baseAddress!.assumingMemoryBound(to: CChar.self))
        }
    }

    /// Guest open flags never passed to a reopen: O_CREAT, and O_TMPFILE (its bit
    /// without O_DIRECTORY), would make files as the daemon; O_NOFOLLOW would refuse
    /// the /proc/self/fd link itself; O_PATH would give no I/O.
    static let flagsNeverReopened = O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY | CVFS_O_PATH | (CVFS_O_TMPFILE & ~O_DIRECTORY)

    /// Opens `inode` for I/O with `flags`, never following a symlink.
    func reopen(_ inode: InodeData, flags: Int32) throws(Errno) -> Int32 {
        // O_PATH descriptors of symlinks and special files are never reopened for I/O.
        if inode.isSymlink { throw Errno.loop }
        guard inode.isRegular || inode.isDirectory else { throw Errno.permissionDenied }
        let cleaned = flags & ~Self.flagsNeverReopened
        if inode.isHandle { return try inode.openFromHandle(flags: cleaned) }
        return try withProcName(inode.fd) { (name) throws(Errno) -> Int32 in
            try Sys.openat(procSelfFD, name, cleaned)
        }
    }

    /// Runs `body` with a descriptor fit for f*xattr/fchmod/ftruncate on `inode`.
    func withIOFD<T>(_ inode: InodeData, flags: Int32, _ body: (Int32) throws(Errno) -> T) throws(Errno) -> T {
        let fd = try reopen(inode, flags: flags | O_NONBLOCK)
        defer { Sys.close(fd) }
        return try body(fd)
    }

    /// Runs a path-based call on "/proc/self/fd/N" for symlinks and special files,
    /// which cannot be opened: the thread gets a private working directory once.
    func withProcPath<T>(_ inode: InodeData, _ body: (UnsafePointer<CChar>) throws(Errno) -> T) throws(Errno) -> T {
        guard let key = privateCWDKey else { throw Errno.noMemory }
        if Sys.threadValue(key) == nil {
            try Sys.unshare(CVFS_CLONE_FS)
            Sys.setThreadValue(key, UnsafeMutableRawPointer(bitPattern: 1))
        }
        try Sys.fchdir(procSelfFD)
        return try inode.withPathFD { (fd) throws(Errno) -> T in
            try withProcName(fd) { (name) throws(Errno) -> T in try body(name) }
        }
    }
}

extension PassthroughFileSystem {
    // MARK: - Session

    /// INIT: offers the flags always supported plus those the configuration allows
    /// (locks, writeback, READDIRPLUS, submounts, killpriv v2, xattrs and ACLs, security
    /// labels, symlink caching, mmap under direct I/O) and keeps the part the kernel can
    /// do; later requests read it through `isNegotiated`.
    public func initialize(capable: InitFlags) throws(Errno) -> InitFlags {
        var wanted: InitFlags = [.asyncRead, .atomicOTrunc, .exportSupport, .bigWrites, .autoInvalData,
                                 .asyncDIO, .parallelDirops, .maxPages, .createSuppGroup]
        if configuration.posixLocks { wanted.insert(.posixLocks) }
        if configuration.flock { wanted.insert(.flockLocks) }
        if configuration.writeback { wanted.insert(.writebackCache) }
        if configuration.readdirplusEnabled { wanted.formUnion([.doReaddirplus, .readdirplusAuto]) }
        if configuration.announceSubmounts { wanted.insert(.submounts) }
        if configuration.killprivV2 { wanted.insert(.handleKillprivV2) }
        if configuration.xattrEnabled { wanted.insert(.setxattrExt) }
        if configuration.posixACL && configuration.xattrEnabled { wanted.formUnion([.posixACL, .dontMask, .setxattrExt]) }
        if configuration.securityLabel { wanted.insert(.securityContext) }
        if configuration.cache != .never { wanted.insert(.cacheSymlinks) }
        if configuration.allowMmap { wanted.insert(.directIOAllowMmap) }
        let chosen = wanted.intersection(capable)
        negotiated.store(chosen.rawValue, ordering: .relaxed)
        return chosen
    }

    /// DESTROY: cancels every parked lock wait, drops every open file and directory and
    /// every node but the root, whose lookup count stays; descriptors close outside the locks.
    public func destroy() {
        lockWaits.cancelAll()
        // Release outside the locks: dropping the last reference closes descriptors.
        let files = handles.withLock { table -> [OpenFile] in
            let all = Array(table.files.values)
            table.files.removeAll()
            return all
        }
        let nodes = inodes.removeAllButRoot()
        _ = (files.count, nodes.count)
    }
}
