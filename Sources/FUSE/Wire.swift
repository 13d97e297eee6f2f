#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// The FUSE request opcodes this server knows (values of `enum fuse_opcode` in linux/fuse.h).
/// An opcode outside this set is answered with ENOSYS.
public enum Opcode: UInt32, Sendable, CaseIterable {
    case lookup = 1
    case forget = 2
    case getattr = 3
    case setattr = 4
    case readlink = 5
    case symlink = 6
    case mknod = 8
    case mkdir = 9
    case unlink = 10
    case rmdir = 11
    case rename = 12
    case link = 13
    case open = 14
    case read = 15
    case write = 16
    case statfs = 17
    case release = 18
    case fsync = 20
    case setxattr = 21
    case getxattr = 22
    case listxattr = 23
    case removexattr = 24
    case flush = 25
    case initialize = 26
    case opendir = 27
    case readdir = 28
    case releasedir = 29
    case fsyncdir = 30
    case getlk = 31
    case setlk = 32
    case setlkw = 33
    case access = 34
    case create = 35
    case interrupt = 36
    case bmap = 37
    case destroy = 38
    case ioctl = 39
    case poll = 40
    case notifyReply = 41
    case batchForget = 42
    case fallocate = 43
    case readdirplus = 44
    case rename2 = 45
    case lseek = 46
    case copyFileRange = 47
    case setupMapping = 48
    case removeMapping = 49
    case syncfs = 50
    case tmpfile = 51

    /// FORGET, BATCH_FORGET, INTERRUPT and NOTIFY_REPLY get no reply, ever.
    public var isNeverAnswered: Bool {
        switch self {
        case .forget, .batchForget, .interrupt, .notifyReply: return true
        default: return false
        }
    }

    /// The name used in debug logs, as linux/fuse.h spells it.
    public var name: String {
        switch self {
        case .lookup: return "LOOKUP"
        case .forget: return "FORGET"
        case .getattr: return "GETATTR"
        case .setattr: return "SETATTR"
        case .readlink: return "READLINK"
        case .symlink: return "SYMLINK"
        case .mknod: return "MKNOD"
        case .mkdir: return "MKDIR"
        case .unlink: return "UNLINK"
        case .rmdir: return "RMDIR"
        case .rename: return "RENAME"
        case .link: return "LINK"
        case .open: return "OPEN"
        case .read: return "READ"
        case .write: return "WRITE"
        case .statfs: return "STATFS"
        case .release: return "RELEASE"
        case .fsync: return "FSYNC"
        case .setxattr: return "SETXATTR"
        case .getxattr: return "GETXATTR"
        case .listxattr: return "LISTXATTR"
        case .removexattr: return "REMOVEXATTR"
        case .flush: return "FLUSH"
        case .initialize: return "INIT"
        case .opendir: return "OPENDIR"
        case .readdir: return "READDIR"
        case .releasedir: return "RELEASEDIR"
        case .fsyncdir: return "FSYNCDIR"
        case .getlk: return "GETLK"
        case .setlk: return "SETLK"
        case .setlkw: return "SETLKW"
        case .access: return "ACCESS"
        case .create: return "CREATE"
        case .interrupt: return "INTERRUPT"
        case .bmap: return "BMAP"
        case .destroy: return "DESTROY"
        case .ioctl: return "IOCTL"
        case .poll: return "POLL"
        case .notifyReply: return "NOTIFY_REPLY"
        case .batchForget: return "BATCH_FORGET"
        case .fallocate: return "FALLOCATE"
        case .readdirplus: return "READDIRPLUS"
        case .rename2: return "RENAME2"
        case .lseek: return "LSEEK"
        case .copyFileRange: return "COPY_FILE_RANGE"
        case .setupMapping: return "SETUPMAPPING"
        case .removeMapping: return "REMOVEMAPPING"
        case .syncfs: return "SYNCFS"
        case .tmpfile: return "TMPFILE"
        }
    }
}

/// Sizes and limits of the wire format.
public enum FuseWire {
    public static let inHeaderSize = MemoryLayout<fuse_in_header>.size
    public static let outHeaderSize = MemoryLayout<fuse_out_header>.size
    /// Longest file name (NAME_MAX) and xattr name (XATTR_NAME_MAX), without the NUL.
    public static let maxNameLength = 255
    /// Longest symlink target (PATH_MAX includes the NUL).
    public static let maxSymlinkTarget = 4095
    /// Largest xattr value (XATTR_SIZE_MAX) and xattr name list (XATTR_LIST_MAX).
    public static let maxXattrSize = 65536
    /// Most request-extension bytes accepted (a security context and a group fit easily).
    public static let maxExtensionBytes = 32768
    /// The protocol this server speaks: 7.38, the first with request extensions.
    public static let kernelVersion: UInt32 = 7
    public static let kernelMinorVersion: UInt32 = 38
    /// The oldest minor accepted: 7.31 (Linux 5.4, the first kernel with virtio-fs).
    public static let oldestMinorVersion: UInt32 = 31

    /// Rounds up to the 8-byte alignment of directory records and extensions.
    @inlinable static func align8(_ n: Int) -> Int { (n + 7) & ~7 }
}

extension fuse_attr {
    /// The kernel's view of a host `stat`.
    public init(_ st: stat) {
        self.init()
        ino = UInt64(st.st_ino)
        size = UInt64(truncatingIfNeeded: st.st_size)
        blocks = UInt64(truncatingIfNeeded: st.st_blocks)
        atime = UInt64(truncatingIfNeeded: st.st_atim.tv_sec)
        mtime = UInt64(truncatingIfNeeded: st.st_mtim.tv_sec)
        ctime = UInt64(truncatingIfNeeded: st.st_ctim.tv_sec)
        atimensec = UInt32(truncatingIfNeeded: st.st_atim.tv_nsec)
        mtimensec = UInt32(truncatingIfNeeded: st.st_mtim.tv_nsec)
        ctimensec = UInt32(truncatingIfNeeded: st.st_ctim.tv_nsec)
        mode = st.st_mode
        nlink = UInt32(clamping: st.st_nlink)
        uid = st.st_uid
        gid = st.st_gid
        // glibc's dev_t keeps major < 4096 and minor < 2^20 in its low 32 bits in
        // exactly the kernel's new_encode_dev layout, which is what FUSE carries.
        rdev = UInt32(truncatingIfNeeded: st.st_rdev)
        blksize = UInt32(truncatingIfNeeded: st.st_blksize)
        flags = 0
    }
}

extension fuse_entry_out {
    init(_ entry: Entry) {
        self.init()
        nodeid = entry.nodeID
        generation = entry.generation
        entry_valid = entry.entryTimeout.seconds
        entry_valid_nsec = entry.entryTimeout.nanoseconds
        attr_valid = entry.attributesTimeout.seconds
        attr_valid_nsec = entry.attributesTimeout.nanoseconds
        attr = fuse_attr(entry.attributes)
        attr.flags = entry.attributeFlags
    }
}

extension fuse_attr_out {
    init(_ reply: AttributesReply) {
        self.init()
        attr_valid = reply.timeout.seconds
        attr_valid_nsec = reply.timeout.nanoseconds
        attr = fuse_attr(reply.attributes)
    }
}

extension fuse_open_out {
    init(_ reply: OpenReply) {
        self.init()
        fh = reply.handle
        open_flags = reply.flags.rawValue
    }
}

extension SetAttributes {
    /// A SETATTR request as the filesystem takes it; the handle and lock owner only when valid.
    init(_ a: fuse_setattr_in) {
        self.init(valid: SetAttributesValid(rawValue: a.valid))
        mode = a.mode
        uid = a.uid
        gid = a.gid
        size = a.size
        atime = timespec(tv_sec: Int(truncatingIfNeeded: a.atime), tv_nsec: Int(a.atimensec))
        mtime = timespec(tv_sec: Int(truncatingIfNeeded: a.mtime), tv_nsec: Int(a.mtimensec))
        ctime = timespec(tv_sec: Int(truncatingIfNeeded: a.ctime), tv_nsec: Int(a.ctimensec))
        if valid.contains(.handle) { handle = a.fh }
        if valid.contains(.lockOwner) { lockOwner = a.lock_owner }
    }
}

extension FileLock {
    init(_ l: fuse_file_lock) {
        self.init(start: l.start, end: l.end, type: Int32(bitPattern: l.type), pid: l.pid)
    }
}

extension fuse_file_lock {
    init(_ lock: FileLock) {
        self.init(start: lock.start, end: lock.end, type: UInt32(bitPattern: lock.type), pid: lock.pid)
    }
}

extension fuse_kstatfs {
    /// The kernel's view of a host `statvfs`.
    public init(_ s: statvfs) {
        self.init()
        blocks = UInt64(s.f_blocks)
        bfree = UInt64(s.f_bfree)
        bavail = UInt64(s.f_bavail)
        files = UInt64(s.f_files)
        ffree = UInt64(s.f_ffree)
        bsize = UInt32(clamping: s.f_bsize)
        namelen = UInt32(clamping: s.f_namemax)
        frsize = UInt32(clamping: s.f_frsize)
    }
}

/// The symbolic name of an error number, for debug logs.
public func errnoName(_ e: Errno) -> String {
    switch e.rawValue {
    case EPERM: return "EPERM"
    case ENOENT: return "ENOENT"
    case EINTR: return "EINTR"
    case EIO: return "EIO"
    case EBADF: return "EBADF"
    case EAGAIN: return "EAGAIN"
    case ENOMEM: return "ENOMEM"
    case EACCES: return "EACCES"
    case EFAULT: return "EFAULT"
    case EBUSY: return "EBUSY"
    case EEXIST: return "EEXIST"
    case EXDEV: return "EXDEV"
    case ENODEV: return "ENODEV"
    case ENOTDIR: return "ENOTDIR"
    case EISDIR: return "EISDIR"
    case EINVAL: return "EINVAL"
    case ENFILE: return "ENFILE"
    case EMFILE: return "EMFILE"
    case ENOTTY: return "ENOTTY"
    case EFBIG: return "EFBIG"
    case ENOSPC: return "ENOSPC"
    case ESPIPE: return "ESPIPE"
    case EROFS: return "EROFS"
    case EMLINK: return "EMLINK"
    case ERANGE: return "ERANGE"
    case EDEADLK: return "EDEADLK"
    case ENAMETOOLONG: return "ENAMETOOLONG"
    case ENOLCK: return "ENOLCK"
    case ENOSYS: return "ENOSYS"
    case ENOTEMPTY: return "ENOTEMPTY"
    case ELOOP: return "ELOOP"
    case ENODATA: return "ENODATA"
    case EPROTO: return "EPROTO"
    case EOVERFLOW: return "EOVERFLOW"
    case EOPNOTSUPP: return "EOPNOTSUPP"
    case ETIMEDOUT: return "ETIMEDOUT"
    case ESTALE: return "ESTALE"
    case EDQUOT: return "EDQUOT"
    case E2BIG: return "E2BIG"
    default: return "errno \(e.rawValue)"
    }
}

/// Packs READDIR (`fuse_dirent`) or READDIRPLUS (`fuse_direntplus`) records into a
/// buffer of the size the kernel asked for; each record is padded to 8 bytes and
/// a record that does not fit whole is not written.
struct DirentPacker: DirectorySink {
    let base: UnsafeMutableRawPointer?
    let capacity: Int
    let plus: Bool
    private(set) var used = 0

    static let direntHeaderSize = MemoryLayout<fuse_dirent>.size
    static let entryOutSize = MemoryLayout<fuse_entry_out>.size

    init(_ buffer: UnsafeMutableRawBufferPointer, plus: Bool) {
        base = buffer.baseAddress
        capacity = buffer.baseAddress == nil ? 0 : buffer.count
        self.plus = plus
    }

    func recordLength(nameLength: Int) -> Int {
        FuseWire.align8((plus ? Self.entryOutSize : 0) + Self.direntHeaderSize + nameLength)
    }

    var remainingBytes: Int { capacity - used }

    func fits(nameLength: Int) -> Bool {
        nameLength > 0 && nameLength <= FuseWire.maxNameLength
            && recordLength(nameLength: nameLength) <= capacity - used
    }

    mutating func add(_ entry: DirectoryEntry, plus entryPlus: Entry?) -> Bool {
        let nameLength = entry.name.count
        guard let base, fits(nameLength: nameLength) else { return false }
        let length = recordLength(nameLength: nameLength)
        let record = base + used
        record.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        var direntStart = record
        if plus {
            var out: fuse_entry_out
            if let entryPlus {
                out = fuse_entry_out(entryPlus)
            } else {
                // Node id 0 tells the kernel "no attributes for this one" (e.g. "." and "..").
                out = fuse_entry_out()
                out.attr.ino = entry.inode
                out.attr.mode = entry.type << 12
            }
            withUnsafeBytes(of: &out) { UnsafeMutableRawBufferPointer(start: record, count: $0.count).copyMemory(from: $0) }
            direntStart = record + Self.entryOutSize
        }
        var dirent = fuse_dirent()
        dirent.ino = entry.inode
        dirent.off = entry.nextOffset
        dirent.namelen = UInt32(nameLength)
        dirent.type = entry.type
        withUnsafeBytes(of: &dirent) { UnsafeMutableRawBufferPointer(start: direntStart, count: $0.count).copyMemory(from: $0) }
        (direntStart + Self.direntHeaderSize).copyMemory(from: entry.name.cString, byteCount: nameLength)
        used += length
        return true
    }
}
