#if canImport(Glibc)
import Glibc
#endif
import Posix
import CVirtioFS

/// The FUSE node id the kernel uses for an inode. 1 is the root.
public typealias NodeID = UInt64
/// An open file or directory handle returned by open/opendir/create.
public typealias HandleID = UInt64

public let rootNodeID: NodeID = 1

/// Who is asking: the credentials and process of the guest caller.
public struct RequestContext: Sendable {
    public var unique: UInt64
    public var uid: UInt32
    public var gid: UInt32
    public var pid: UInt32
    public init(unique: UInt64 = 0, uid: UInt32 = 0, gid: UInt32 = 0, pid: UInt32 = 0) {
        self.unique = unique; self.uid = uid; self.gid = gid; self.pid = pid
    }
}

/// A cache lifetime the kernel is told to trust an entry or attributes for.
public struct Timeout: Sendable, Equatable {
    public var seconds: UInt64
    public var nanoseconds: UInt32
    public init(seconds: UInt64, nanoseconds: UInt32 = 0) { self.seconds = seconds; self.nanoseconds = nanoseconds }
    public static let zero = Timeout(seconds: 0)
    /// Fractional seconds, as `timeout=` takes them.
    public init(_ value: Double) {
        let clamped = max(0, min(value, Double(UInt32.max)))
        seconds = UInt64(clamped)
        nanoseconds = UInt32((clamped - Double(seconds)) * 1_000_000_000)
    }
}

/// A file or xattr name from the guest: any bytes but NUL and (for file names) '/'.
/// It points into the dispatcher's per-request buffer, is NUL-terminated so it
/// can go straight to a system call, and is valid only during the call it is passed to.
public struct FileName: @unchecked Sendable {
    public let cString: UnsafePointer<CChar>
    /// Length in bytes, without the terminating NUL.
    public let count: Int

    public init(cString: UnsafePointer<CChar>, count: Int) {
        self.cString = cString
        self.count = count
    }

    public var bytes: UnsafeBufferPointer<UInt8> {
        UnsafeRawPointer(cString).withMemoryRebound(to: UInt8.self, capacity: count) {
            UnsafeBufferPointer(start: $0, count: count)
        }
    }

    /// True for "." and "..", which must never be resolved on the host.
    public var isDotOrDotDot: Bool {
        (count == 1 && cString[0] == 0x2E) || (count == 2 && cString[0] == 0x2E && cString[1] == 0x2E)
    }

    /// True if the name contains '/'.
    public var containsSlash: Bool { bytes.contains(0x2F) }

    /// For logs only.
    public var debugDescription: String { String(decoding: bytes, as: UTF8.self) }
}

/// The reply to a successful LOOKUP (and to the creating operations).
public struct Entry: Sendable {
    public var nodeID: NodeID
    public var generation: UInt64
    public var attributes: stat
    public var attributesTimeout: Timeout
    public var entryTimeout: Timeout
    /// FUSE_ATTR_* bits for the kernel, e.g. FUSE_ATTR_SUBMOUNT for a mount point
    /// inside the shared tree when submounts were negotiated.
    public var attributeFlags: UInt32 = 0
    public init(nodeID: NodeID, generation: UInt64 = 0, attributes: stat, attributesTimeout: Timeout, entryTimeout: Timeout) {
        self.nodeID = nodeID; self.generation = generation; self.attributes = attributes
        self.attributesTimeout = attributesTimeout; self.entryTimeout = entryTimeout
    }
}

/// Attributes plus how long the kernel may cache them.
public struct AttributesReply: Sendable {
    public var attributes: stat
    public var timeout: Timeout
    public init(attributes: stat, timeout: Timeout) { self.attributes = attributes; self.timeout = timeout }
}

/// FOPEN_* flags in an open/create/opendir reply.
public struct OpenReplyFlags: OptionSet, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let directIO = OpenReplyFlags(rawValue: UInt32(FOPEN_DIRECT_IO))
    public static let keepCache = OpenReplyFlags(rawValue: UInt32(FOPEN_KEEP_CACHE))
    public static let nonSeekable = OpenReplyFlags(rawValue: UInt32(FOPEN_NONSEEKABLE))
    public static let cacheDirectory = OpenReplyFlags(rawValue: UInt32(FOPEN_CACHE_DIR))
    public static let stream = OpenReplyFlags(rawValue: UInt32(FOPEN_STREAM))
    public static let parallelDirectWrites = OpenReplyFlags(rawValue: UInt32(FOPEN_PARALLEL_DIRECT_WRITES))
}

public struct OpenReply: Sendable {
    public var handle: HandleID
    public var flags: OpenReplyFlags
    public init(handle: HandleID, flags: OpenReplyFlags = []) { self.handle = handle; self.flags = flags }
}

/// Which fields of a SETATTR request are set (FATTR_*).
public struct SetAttributesValid: OptionSet, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let mode = SetAttributesValid(rawValue: UInt32(FATTR_MODE))
    public static let uid = SetAttributesValid(rawValue: UInt32(FATTR_UID))
    public static let gid = SetAttributesValid(rawValue: UInt32(FATTR_GID))
    public static let size = SetAttributesValid(rawValue: UInt32(FATTR_SIZE))
    public static let atime = SetAttributesValid(rawValue: UInt32(FATTR_ATIME))
    public static let mtime = SetAttributesValid(rawValue: UInt32(FATTR_MTIME))
    public static let handle = SetAttributesValid(rawValue: UInt32(FATTR_FH))
    public static let atimeNow = SetAttributesValid(rawValue: UInt32(FATTR_ATIME_NOW))
    public static let mtimeNow = SetAttributesValid(rawValue: UInt32(FATTR_MTIME_NOW))
    public static let lockOwner = SetAttributesValid(rawValue: UInt32(FATTR_LOCKOWNER))
    public static let ctime = SetAttributesValid(rawValue: UInt32(FATTR_CTIME))
    public static let killSuidGid = SetAttributesValid(rawValue: UInt32(FATTR_KILL_SUIDGID))
}

/// A decoded SETATTR request.
public struct SetAttributes: Sendable {
    public var valid: SetAttributesValid
    public var mode: UInt32 = 0
    public var uid: UInt32 = 0
    public var gid: UInt32 = 0
    public var size: UInt64 = 0
    public var atime = timespec()
    public var mtime = timespec()
    public var ctime = timespec()
    public var handle: HandleID? = nil
    public var lockOwner: UInt64? = nil
    public init(valid: SetAttributesValid) { self.valid = valid }
}

/// A POSIX record lock as FUSE carries it (`struct fuse_file_lock`).
public struct FileLock: Sendable, Equatable {
    public var start: UInt64
    public var end: UInt64
    /// F_RDLCK, F_WRLCK or F_UNLCK.
    public var type: Int32
    public var pid: UInt32
    public init(start: UInt64, end: UInt64, type: Int32, pid: UInt32) {
        self.start = start; self.end = end; self.type = type; self.pid = pid
    }
}

/// Extras that come with node-creating requests (create, mkdir, mknod, symlink, tmpfile).
public struct CreateExtras: @unchecked Sendable {
    /// The caller's umask; already applied by the kernel unless DONT_MASK was negotiated.
    public var umask: UInt32 = 0
    /// FUSE_SECURITY_CTX: the xattr name and value to set atomically on the new node.
    public var securityContextName: FileName? = nil
    public var securityContextValue: UnsafeRawBufferPointer? = nil
    /// FUSE_CREATE_SUPP_GROUP: a supplementary group of the caller that should own the node.
    public var supplementaryGroup: UInt32? = nil
    public init() {}
}

/// Flags the filesystem wants from INIT (FUSE_* init flags, 64-bit).
public struct InitFlags: OptionSet, Sendable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static let asyncRead = InitFlags(rawValue: UInt64(FUSE_ASYNC_READ))
    public static let posixLocks = InitFlags(rawValue: UInt64(FUSE_POSIX_LOCKS))
    public static let atomicOTrunc = InitFlags(rawValue: UInt64(FUSE_ATOMIC_O_TRUNC))
    public static let exportSupport = InitFlags(rawValue: UInt64(FUSE_EXPORT_SUPPORT))
    public static let bigWrites = InitFlags(rawValue: UInt64(FUSE_BIG_WRITES))
    public static let dontMask = InitFlags(rawValue: UInt64(FUSE_DONT_MASK))
    public static let flockLocks = InitFlags(rawValue: UInt64(FUSE_FLOCK_LOCKS))
    public static let autoInvalData = InitFlags(rawValue: UInt64(FUSE_AUTO_INVAL_DATA))
    public static let doReaddirplus = InitFlags(rawValue: UInt64(FUSE_DO_READDIRPLUS))
    public static let readdirplusAuto = InitFlags(rawValue: UInt64(FUSE_READDIRPLUS_AUTO))
    public static let asyncDIO = InitFlags(rawValue: UInt64(FUSE_ASYNC_DIO))
    public static let writebackCache = InitFlags(rawValue: UInt64(FUSE_WRITEBACK_CACHE))
    public static let parallelDirops = InitFlags(rawValue: UInt64(FUSE_PARALLEL_DIROPS))
    public static let handleKillpriv = InitFlags(rawValue: UInt64(FUSE_HANDLE_KILLPRIV))
    public static let posixACL = InitFlags(rawValue: UInt64(FUSE_POSIX_ACL))
    public static let maxPages = InitFlags(rawValue: UInt64(FUSE_MAX_PAGES))
    public static let cacheSymlinks = InitFlags(rawValue: UInt64(FUSE_CACHE_SYMLINKS))
    public static let explicitInvalData = InitFlags(rawValue: UInt64(FUSE_EXPLICIT_INVAL_DATA))
    public static let submounts = InitFlags(rawValue: UInt64(FUSE_SUBMOUNTS))
    public static let handleKillprivV2 = InitFlags(rawValue: UInt64(FUSE_HANDLE_KILLPRIV_V2))
    public static let setxattrExt = InitFlags(rawValue: UInt64(FUSE_SETXATTR_EXT))
    public static let initExt = InitFlags(rawValue: UInt64(FUSE_INIT_EXT))
    public static let securityContext = InitFlags(rawValue: CVFS_FUSE_SECURITY_CTX)
    public static let createSuppGroup = InitFlags(rawValue: CVFS_FUSE_CREATE_SUPP_GROUP)
    /// Shared mmap of files opened with FOPEN_DIRECT_IO (cache=never/metadata); Linux 6.6+.
    public static let directIOAllowMmap = InitFlags(rawValue: CVFS_FUSE_DIRECT_IO_ALLOW_MMAP)
}

/// A directory entry handed to a `DirectorySink`.
public struct DirectoryEntry {
    public var inode: UInt64
    /// The offset of the *next* entry: what the kernel passes back to continue after this one.
    public var nextOffset: UInt64
    /// DT_* type.
    public var type: UInt32
    public var name: FileName
    public init(inode: UInt64, nextOffset: UInt64, type: UInt32, name: FileName) {
        self.inode = inode; self.nextOffset = nextOffset; self.type = type; self.name = name
    }
}

/// Where readdir/readdirplus put entries. Supplied by the dispatcher.
public protocol DirectorySink {
    /// True if an entry with a name of `nameLength` bytes still fits in the reply.
    /// For readdirplus, ask before the lookup so no lookup count is taken for an
    /// entry that is then dropped.
    func fits(nameLength: Int) -> Bool
    /// Appends an entry (with its lookup result for readdirplus); false if it did not fit.
    mutating func add(_ entry: DirectoryEntry, plus: Entry?) -> Bool
    /// Bytes still free in the reply, so a backend can read no more entries from the
    /// host than the reply can take (reading ahead makes the next READDIR seek back).
    var remainingBytes: Int { get }
}

extension DirectorySink {
    /// Unknown: a backend reads as much as it likes.
    public var remainingBytes: Int { Int.max }
}

/// The operations a FUSE filesystem serves. The dispatcher (`Server`) decodes
/// requests, validates them and calls these; every method defaults to ENOSYS (or,
/// where the kernel expects no answer or ignores it, to doing nothing).
///
/// Lookup counts: every successful reply carrying an `Entry` (lookup, mknod,
/// mkdir, symlink, link, create, tmpfile, and each readdirplus entry with a
/// non-zero node id) adds one to the node's lookup count. FORGET subtracts; a
/// node whose count reaches zero may be dropped. The root is never forgotten.
/// Removing a name (unlink, rmdir, rename over it) does not change any count: the
/// kernel still holds the node and forgets it later.
///
/// Errors: the thrown `Errno` is the reply's error, and the guest's system call
/// returns it. For some requests the kernel reads ENOSYS as "never send this again"
/// and then acts as documented on the method; any other errno is only this call's
/// failure. `Entry` replies must hold a node id other than 0, the node's attributes
/// (the kernel uses them, e.g. the size, even with a zero timeout), and timeouts
/// saying how long the kernel may trust the name (`entryTimeout`) and the attributes
/// (`attributesTimeout`) without asking again. A node id may be reused after its
/// count reached zero only with a new `generation`: (node id, generation) names one
/// file for the life of the filesystem (NFS export relies on it).
///
/// Names and buffers passed in are valid only during the call. Methods are called
/// concurrently from several queue threads.
public protocol FileSystem: Sendable {
    /// INIT: `capable` is what the kernel offers; return the subset wanted. The
    /// dispatcher adds its own (`Server.dispatcherFlags`) and replies; throwing refuses
    /// the session (INIT is answered with that errno).
    func initialize(capable: InitFlags) throws(Errno) -> InitFlags
    /// DESTROY: the session ends (the guest unmounted); drop every node but the root,
    /// every handle and every parked lock wait. A new INIT may follow.
    func destroy()

    /// LOOKUP: resolve `name` in directory `parent`; +1 lookup count.
    /// `name` is never empty and never holds '/', but may be "." or "..": the
    /// kernel asks for them to find an inode's parent when the share is exported
    /// (EXPORT_SUPPORT). Answer them from the inode table, or refuse them.
    /// ENOENT: no such name; ENOTDIR: `parent` is not a directory.
    func lookup(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) -> Entry
    /// FORGET / BATCH_FORGET: subtract `count` lookups (never more than replies gave).
    /// Never replied to, so it cannot fail; an unknown node is ignored.
    func forget(_ node: NodeID, count: UInt64)

    /// GETATTR. `handle` is set when the kernel passed FUSE_GETATTR_FH (fstat on an
    /// open file, which must work even after the name is gone). ENOENT or ESTALE when
    /// the node no longer exists. With the writeback cache the kernel keeps its own size.
    func getattr(_ ctx: RequestContext, node: NodeID, handle: HandleID?) throws(Errno) -> AttributesReply
    /// SETATTR: chmod, chown, truncate, utimens; only the fields in `valid` change.
    /// Reply with the attributes after the change. With FATTR_KILL_SUIDGID (killpriv v2),
    /// clear setuid/setgid as the kernel would on the host.
    func setattr(_ ctx: RequestContext, node: NodeID, _ attributes: SetAttributes) throws(Errno) -> AttributesReply
    /// READLINK: copy the target into `buffer` (PATH_MAX bytes, or what the reply can
    /// hold); return its length (not NUL-terminated, at most `buffer.count`: more is EIO).
    /// EINVAL: the node is not a symlink.
    func readlink(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int
    /// SYMLINK: create `name` in `parent` pointing at `target` (stored as given, never
    /// resolved); +1 lookup count.
    func symlink(_ ctx: RequestContext, target: FileName, parent: NodeID, name: FileName, extras: CreateExtras) throws(Errno) -> Entry
    /// MKNOD: regular files, FIFOs, sockets, devices; `mode` holds the file type bits
    /// too, `rdev` the device number (kernel encoding). +1 lookup count. EEXIST if taken.
    func mknod(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, rdev: UInt32, extras: CreateExtras) throws(Errno) -> Entry
    /// MKDIR: a new directory `name` in `parent` with permission bits `mode` (the umask
    /// is in `extras`: already applied unless DONT_MASK); +1 lookup count. EEXIST if taken.
    func mkdir(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, extras: CreateExtras) throws(Errno) -> Entry
    /// UNLINK: remove the non-directory `name` from `parent`. The node's lookup count
    /// is unchanged: the kernel forgets it later, and open handles keep working.
    func unlink(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno)
    /// RMDIR: remove the empty directory `name` from `parent`; ENOTEMPTY if it is not
    /// empty, ENOTDIR if it is not a directory. Lookup counts as for unlink.
    func rmdir(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno)
    /// RENAME / RENAME2: `flags` are RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT
    /// (0 for RENAME); unknown flags are EINVAL. The moved node keeps its node id; a
    /// replaced target keeps its lookup count until forgotten.
    func rename(_ ctx: RequestContext, parent: NodeID, name: FileName, newParent: NodeID, newName: FileName, flags: UInt32) throws(Errno)
    /// LINK: a new name for `node`; +1 lookup count on `node`, and the reply is its entry.
    func link(_ ctx: RequestContext, node: NodeID, newParent: NodeID, newName: FileName) throws(Errno) -> Entry

    /// OPEN: `flags` are the guest's open flags (O_CREAT, O_EXCL and O_NOCTTY already
    /// handled by the kernel). The reply's handle comes back with READ, WRITE, FLUSH,
    /// FSYNC, locks and RELEASE; its flags tell the kernel how to cache (FOPEN_*).
    /// `killSuidGid` is FUSE_OPEN_KILL_SUIDGID: O_TRUNC by a caller without
    /// CAP_FSETID (sent only with killpriv v2).
    func open(_ ctx: RequestContext, node: NodeID, flags: UInt32, killSuidGid: Bool) throws(Errno) -> OpenReply
    /// READ: fill `writer` with up to `size` bytes from `offset`, zero copy; return bytes
    /// read (never more than `size`: more is EIO). Fewer than `size` means end of file
    /// to the kernel (with direct I/O the caller sees the short count).
    func read<W: FuseWriter>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, size: UInt32, into writer: inout W) throws(Errno) -> Int
    /// WRITE: take `size` bytes from `reader`, zero copy; return bytes written (never
    /// more than `size`). The kernel turns a short count into a short write(2).
    /// `killSuidGid` is FUSE_WRITE_KILL_SUIDGID: the caller lacks CAP_FSETID; clear setuid/setgid as the
    /// kernel would. The kernel sets it for direct I/O whether or not killpriv v2 was negotiated.
    func write<R: FuseReader>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, size: UInt32, flags: UInt32, killSuidGid: Bool, from reader: inout R) throws(Errno) -> Int
    /// STATFS: the usage of the filesystem holding `node` (the node of the path the
    /// guest's statfs(2) named). Blocks, free counts, block and fragment size and the longest
    /// name are passed on; the guest's statfs(2) sees them as they are.
    func statfs(_ ctx: RequestContext, node: NodeID) throws(Errno) -> statvfs
    /// RELEASE: the last reference to an open file is gone; the handle is never used
    /// again. Errors are not reported to the guest (the reply is always success).
    /// `lockOwner` is set with `flush` (FUSE_RELEASE_FLUSH: flush too) or `flockRelease`
    /// (FUSE_RELEASE_FLOCK_UNLOCK: drop the flock lock held through this handle).
    func release(_ ctx: RequestContext, node: NodeID, handle: HandleID, flags: UInt32, lockOwner: UInt64?, flush: Bool, flockRelease: Bool) throws(Errno)
    /// FSYNC: write the file's data (and, unless `datasync`, its metadata) to stable
    /// storage. ENOSYS: the kernel never sends FSYNC again and reports success.
    func fsync(_ ctx: RequestContext, node: NodeID, handle: HandleID, datasync: Bool) throws(Errno)
    /// FLUSH: on every close(2) of a descriptor (so possibly many per open); release
    /// POSIX locks held by `lockOwner`. The error is close(2)'s. ENOSYS: never sent
    /// again, close succeeds.
    func flush(_ ctx: RequestContext, node: NodeID, handle: HandleID, lockOwner: UInt64) throws(Errno)

    /// SETXATTR. `flags` are XATTR_CREATE/XATTR_REPLACE (EEXIST / ENODATA when they do not
    /// hold); `extFlags` (SETXATTR_EXT) may hold FUSE_SETXATTR_ACL_KILL_SGID.
    /// ENOSYS: never sent again, the guest gets EOPNOTSUPP.
    func setxattr(_ ctx: RequestContext, node: NodeID, name: FileName, value: UnsafeRawBufferPointer, flags: UInt32, extFlags: UInt32) throws(Errno)
    /// GETXATTR: with `buffer` nil, return the value's size; otherwise copy it (ERANGE if too small).
    /// ENODATA: no such attribute. ENOSYS: never sent again, the guest gets EOPNOTSUPP.
    func getxattr(_ ctx: RequestContext, node: NodeID, name: FileName, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int
    /// LISTXATTR: NUL-separated names, same size-query contract as getxattr.
    func listxattr(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int
    /// REMOVEXATTR: ENODATA when there is no such attribute. ENOSYS: never sent again,
    /// the guest gets EOPNOTSUPP.
    func removexattr(_ ctx: RequestContext, node: NodeID, name: FileName) throws(Errno)

    /// OPENDIR: `flags` are the guest's open flags. The reply's handle comes back with
    /// READDIR, READDIRPLUS, FSYNCDIR and RELEASEDIR; ENOTDIR if `node` is not a directory.
    func opendir(_ ctx: RequestContext, node: NodeID, flags: UInt32) throws(Errno) -> OpenReply
    /// READDIR / READDIRPLUS from `offset` (0, or an entry's `nextOffset`); stop when the sink is full.
    /// Adding nothing means the end of the directory. Offsets must stay valid while
    /// entries are added and removed (the guest continues from the last one it got).
    /// For readdirplus, each entry added with a non-nil `plus` took a lookup count ("." and ".." never do).
    func readdir<S: DirectorySink>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, plus: Bool, into sink: inout S) throws(Errno)
    /// RELEASEDIR: the directory handle is never used again; errors are not reported.
    func releasedir(_ ctx: RequestContext, node: NodeID, handle: HandleID, flags: UInt32) throws(Errno)
    /// FSYNCDIR: fsync on an open directory (`datasync` as for fsync). ENOSYS: never
    /// sent again, success reported.
    func fsyncdir(_ ctx: RequestContext, node: NodeID, handle: HandleID, datasync: Bool) throws(Errno)

    /// GETLK: the first lock that would conflict with `lock`, or `lock` with type F_UNLCK.
    /// The kernel sends lock requests only when POSIX_LOCKS (or FLOCK_LOCKS for flock)
    /// was agreed at INIT; otherwise it keeps locks to itself.
    func getlk(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock) throws(Errno) -> FileLock
    /// SETLK: take or drop `lock` without waiting (EAGAIN when it conflicts); `flock` is
    /// FUSE_LK_FLOCK (BSD flock rather than POSIX record lock). The dispatcher always
    /// passes `wait` false and sends SETLKW to `setlkw`; `wait` true is for the default
    /// `setlkw` of a filesystem that has no other way to wait.
    func setlk(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock, wait: Bool, flock: Bool) throws(Errno)
    /// SETLKW: like `setlk`, but a conflicting lock is waited for, without holding the
    /// calling thread: try at once and return `.granted` (or throw) when no wait is
    /// needed. Otherwise call `park()` once; it returns the request's completion, or
    /// nil when the transport cannot answer late (then throw, e.g. ENOLCK). Having
    /// one, return `.parked` and later call its `finish` exactly once: nil when
    /// granted, EINTR when `interruptLockWait` names the request, another errno when
    /// the wait fails. `finish` returning false means nobody can learn of the grant:
    /// release the lock again. A bounded number of requests may be parked (ENOLCK
    /// beyond). The guest kernel turns an EINTR answer into a restart unless a
    /// signal is pending, so answer EINTR only for an interrupt.
    func setlkw(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock, flock: Bool,
                park: () -> LockWaitCompletion?) throws(Errno) -> LockWaitOutcome
    /// FUSE_INTERRUPT for request `unique`: if it is a parked lock wait, finish it with
    /// EINTR (the guest has a signal pending). Anything else is not interruptible here.
    func interruptLockWait(unique: UInt64)

    /// ACCESS: `mask` of R_OK/W_OK/X_OK/F_OK for the caller; EACCES when denied. ENOSYS:
    /// never sent again, and access(2) succeeds from then on.
    func access(_ ctx: RequestContext, node: NodeID, mask: UInt32) throws(Errno)
    /// CREATE: atomically create and open; +1 lookup count. The reply is the entry, then
    /// the open. ENOSYS: never sent again, the kernel uses MKNOD and OPEN instead.
    func create(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, flags: UInt32, extras: CreateExtras) throws(Errno) -> (Entry, OpenReply)
    /// TMPFILE: an unnamed file in `parent` (O_TMPFILE), open; +1 lookup count. It may
    /// later get a name through LINK. ENOSYS: never sent again, EOPNOTSUPP to the guest.
    func tmpfile(_ ctx: RequestContext, parent: NodeID, mode: UInt32, flags: UInt32, extras: CreateExtras) throws(Errno) -> (Entry, OpenReply)
    /// FALLOCATE: `mode` is fallocate(2)'s FALLOC_FL_* (0 allocates, extending the size);
    /// EOPNOTSUPP for a mode the host cannot do. ENOSYS: never sent again, EOPNOTSUPP to the guest.
    func fallocate(_ ctx: RequestContext, node: NodeID, handle: HandleID, mode: UInt32, offset: UInt64, length: UInt64) throws(Errno)
    /// LSEEK: SEEK_DATA / SEEK_HOLE (and SEEK_SET/CUR/END); return the new offset (ENXIO
    /// when SEEK_DATA/SEEK_HOLE start past the end, as lseek(2)). ENOSYS: never sent again, the kernel seeks by itself.
    func lseek(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, whence: UInt32) throws(Errno) -> UInt64
    /// COPY_FILE_RANGE: copy `length` bytes from `handleIn` at `offsetIn` to `handleOut` at
    /// `offsetOut` on the host; return bytes copied (at most `length`: more is EIO; 0 at
    /// the source's end). The dispatcher caps `length` so the 32-bit reply can carry it.
    /// ENOSYS: never sent again, the guest kernel copies the data itself.
    func copyFileRange(_ ctx: RequestContext, nodeIn: NodeID, handleIn: HandleID, offsetIn: UInt64,
                       nodeOut: NodeID, handleOut: HandleID, offsetOut: UInt64, length: UInt64, flags: UInt64) throws(Errno) -> Int
    /// SYNCFS: syncfs(2) in the guest on the filesystem holding `node`: write back
    /// everything the share holds. ENOSYS: never sent again, success reported.
    func syncfs(_ ctx: RequestContext, node: NodeID) throws(Errno)
}

extension FileSystem {
    public func initialize(capable: InitFlags) throws(Errno) -> InitFlags { [] }
    public func destroy() {}
    public func lookup(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) -> Entry { throw .noSys }
    public func forget(_ node: NodeID, count: UInt64) {}
    public func getattr(_ ctx: RequestContext, node: NodeID, handle: HandleID?) throws(Errno) -> AttributesReply { throw .noSys }
    public func setattr(_ ctx: RequestContext, node: NodeID, _ attributes: SetAttributes) throws(Errno) -> AttributesReply { throw .noSys }
    public func readlink(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int { throw .noSys }
    public func symlink(_ ctx: RequestContext, target: FileName, parent: NodeID, name: FileName, extras: CreateExtras) throws(Errno) -> Entry { throw .noSys }
    public func mknod(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, rdev: UInt32, extras: CreateExtras) throws(Errno) -> Entry { throw .noSys }
    public func mkdir(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, extras: CreateExtras) throws(Errno) -> Entry { throw .noSys }
    public func unlink(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) { throw .noSys }
    public func rmdir(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) { throw .noSys }
    public func rename(_ ctx: RequestContext, parent: NodeID, name: FileName, newParent: NodeID, newName: FileName, flags: UInt32) throws(Errno) { throw .noSys }
    public func link(_ ctx: RequestContext, node: NodeID, newParent: NodeID, newName: FileName) throws(Errno) -> Entry { throw .noSys }
    public func open(_ ctx: RequestContext, node: NodeID, flags: UInt32, killSuidGid: Bool) throws(Errno) -> OpenReply { throw .noSys }
    public func read<W: FuseWriter>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, size: UInt32, into writer: inout W) throws(Errno) -> Int { throw .noSys }
    public func write<R: FuseReader>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, size: UInt32, flags: UInt32, killSuidGid: Bool, from reader: inout R) throws(Errno) -> Int { throw .noSys }
    public func statfs(_ ctx: RequestContext, node: NodeID) throws(Errno) -> statvfs { throw .noSys }
    public func release(_ ctx: RequestContext, node: NodeID, handle: HandleID, flags: UInt32, lockOwner: UInt64?, flush: Bool, flockRelease: Bool) throws(Errno) {}
    public func fsync(_ ctx: RequestContext, node: NodeID, handle: HandleID, datasync: Bool) throws(Errno) { throw .noSys }
    public func flush(_ ctx: RequestContext, node: NodeID, handle: HandleID, lockOwner: UInt64) throws(Errno) { throw .noSys }
    public func setxattr(_ ctx: RequestContext, node: NodeID, name: FileName, value: UnsafeRawBufferPointer, flags: UInt32, extFlags: UInt32) throws(Errno) { throw .noSys }
    public func getxattr(_ ctx: RequestContext, node: NodeID, name: FileName, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int { throw .noSys }
    public func listxattr(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int { throw .noSys }
    public func removexattr(_ ctx: RequestContext, node: NodeID, name: FileName) throws(Errno) { throw .noSys }
    public func opendir(_ ctx: RequestContext, node: NodeID, flags: UInt32) throws(Errno) -> OpenReply { throw .noSys }
    public func readdir<S: DirectorySink>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, plus: Bool, into sink: inout S) throws(Errno) { throw .noSys }
    public func releasedir(_ ctx: RequestContext, node: NodeID, handle: HandleID, flags: UInt32) throws(Errno) {}
    public func fsyncdir(_ ctx: RequestContext, node: NodeID, handle: HandleID, datasync: Bool) throws(Errno) { throw .noSys }
    public func getlk(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock) throws(Errno) -> FileLock { throw .noSys }
    public func setlk(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock, wait: Bool, flock: Bool) throws(Errno) { throw .noSys }
    /// By default SETLKW is `setlk` with `wait` true, answered before returning.
    public func setlkw(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock, flock: Bool,
                       park: () -> LockWaitCompletion?) throws(Errno) -> LockWaitOutcome {
        try setlk(ctx, node: node, handle: handle, owner: owner, lock: lock, wait: true, flock: flock)
        return .granted
    }
    public func interruptLockWait(unique: UInt64) {}
    public func access(_ ctx: RequestContext, node: NodeID, mask: UInt32) throws(Errno) { throw .noSys }
    public func create(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, flags: UInt32, extras: CreateExtras) throws(Errno) -> (Entry, OpenReply) { throw .noSys }
    public func tmpfile(_ ctx: RequestContext, parent: NodeID, mode: UInt32, flags: UInt32, extras: CreateExtras) throws(Errno) -> (Entry, OpenReply) { throw .noSys }
    public func fallocate(_ ctx: RequestContext, node: NodeID, handle: HandleID, mode: UInt32, offset: UInt64, length: UInt64) throws(Errno) { throw .noSys }
    public func lseek(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, whence: UInt32) throws(Errno) -> UInt64 { throw .noSys }
    public func copyFileRange(_ ctx: RequestContext, nodeIn: NodeID, handleIn: HandleID, offsetIn: UInt64,
                              nodeOut: NodeID, handleOut: HandleID, offsetOut: UInt64, length: UInt64, flags: UInt64) throws(Errno) -> Int { throw .noSys }
    public func syncfs(_ ctx: RequestContext, node: NodeID) throws(Errno) { throw .noSys }
}
