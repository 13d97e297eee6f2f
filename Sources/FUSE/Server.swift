#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix
import Synchronization

/// What the dispatcher itself decides; everything else is the filesystem's business.
public struct ServerOptions: Sendable {
    /// The largest READ/WRITE payload: 1 MiB at most, 4 KiB at least.
    public static let maximumWrite = 1 << 20
    public static let minimumWrite = 4096

    /// max_write announced at INIT; clamped to [4 KiB, 1 MiB].
    public private(set) var maxWrite: Int

    public init(maxWrite: Int = ServerOptions.maximumWrite) {
        self.maxWrite = min(max(maxWrite, Self.minimumWrite), Self.maximumWrite)
    }

    /// max_pages announced at INIT: enough 4 KiB pages for one max_write payload.
    public var maxPages: Int { (maxWrite + 4095) / 4096 }

    /// The largest READ the kernel may send. It bounds reads by max_pages, which is
    /// ours with MAX_PAGES but its default of 32 pages (128 KiB) without; a reply
    /// buffer must hold this much data, since a short read means end of file.
    public var maxRead: Int { max(maxWrite, 32 * 4096) }
}

/// The FUSE dispatcher: decodes one request from a `FuseReader`, validates it,
/// calls the filesystem and encodes the reply into a `FuseWriter`. It does not
/// know which transport carried the request. Safe to call from many threads.
public final class Server<FS: FileSystem>: Sendable {
    public let filesystem: FS
    public let options: ServerOptions
    let logger: Logger

    // Session state: waiting for INIT, INIT in progress, or running.
    private static var waiting: UInt8 { 0 }
    private static var initializing: UInt8 { 1 }
    private static var running: UInt8 { 2 }
    private let state = Atomic<UInt8>(0)
    private let agreedFlags = Atomic<UInt64>(0)
    private let agreedMinor = Atomic<UInt32>(0)

    public init(filesystem: FS, options: ServerOptions, logger: Logger) {
        self.filesystem = filesystem
        self.options = options
        self.logger = logger
    }

    /// Migration: continues the session the guest negotiated with the source daemon,
    /// which it will not negotiate again. A minor of 0 (no INIT happened) changes nothing.
    public func restoreSession(flags: InitFlags, minor: UInt32) {
        guard minor != 0 else { return }
        agreedFlags.store(flags.rawValue, ordering: .releasing)
        agreedMinor.store(minor, ordering: .releasing)
        state.store(Self.running, ordering: .releasing)
    }

    /// The flags agreed at INIT (empty before INIT and after DESTROY).
    public var negotiatedFlags: InitFlags { InitFlags(rawValue: agreedFlags.load(ordering: .acquiring)) }
    /// The protocol minor agreed at INIT (0 before).
    public var negotiatedMinor: UInt32 { agreedMinor.load(ordering: .acquiring) }

    /// The protocol flags the dispatcher handles itself, whatever the filesystem is.
    public static var dispatcherFlags: InitFlags {
        [.asyncRead, .atomicOTrunc, .exportSupport, .bigWrites, .maxPages, .parallelDirops, .asyncDIO, .initExt]
    }

    /// Handles one request. Returns the reply length (what the transport hands
    /// back to the kernel), or 0 when there is no reply: FORGET, BATCH_FORGET,
    /// INTERRUPT, a request too broken to answer, or a writer too small for the reply.
    public func handle<R: FuseReader, W: FuseWriter>(_ reader: inout R, _ writer: inout W) -> Int {
        guard let header = reader.readWire(fuse_in_header.self) else {
            // Without a whole header there is no unique id to answer to.
            logger.debug("request shorter than fuse_in_header (\(reader.remaining) bytes): dropped")
            return 0
        }
        let start = writer.written
        let opcode = Opcode(rawValue: header.opcode)
        var result: Errno? = nil
        var length: Int
        do {
            length = try dispatch(opcode, header, &reader, &writer)
        } catch {
            result = error
            length = Self.replyError(error, header.unique, &writer, start: start)
        }
        // A reply's header length is what was written, unless an error replaced
        // a reply already under way (then only the header counts).
        assert(length == 0 || result != nil || writer.written - start == length,
               "reply length \(length) but \(writer.written - start) bytes written")
        if logger.isEnabled(.debug) {
            let name = opcode?.name ?? "opcode \(header.opcode)"
            let outcome = result.map { errnoName($0) } ?? (length == 0 ? "no reply" : "\(length) bytes")
            logger.debug("\(name) unique=\(header.unique) nodeid=\(header.nodeid) -> \(outcome)")
        }
        return length
    }

    // MARK: routing

    private func dispatch<R: FuseReader, W: FuseWriter>(
        _ opcode: Opcode?, _ h: fuse_in_header, _ r: inout R, _ w: inout W
    ) throws(Errno) -> Int {
        // The header must describe exactly the bytes the transport delivered.
        guard Int(h.len) >= FuseWire.inHeaderSize, Int(h.len) - FuseWire.inHeaderSize == r.remaining else {
            throw .invalidArgument
        }
        guard let opcode else { throw .noSys }
        if opcode == .initialize { return try doInit(h, &r, &w) }
        guard state.load(ordering: .acquiring) == Self.running else {
            // Outside a session: EIO, except for the requests that are never answered.
            if opcode.isNeverAnswered { return 0 }
            throw .ioError
        }
        let extensionLength = Int(h.total_extlen) * 8
        guard extensionLength <= r.remaining else { throw .invalidArgument }
        let ctx = RequestContext(unique: h.unique, uid: h.uid, gid: h.gid, pid: h.pid)
        let fs = filesystem
        let node = h.nodeid
        let unique = h.unique

        switch opcode {
        case .initialize:
            return 0 // handled above
        case .destroy:
            fs.destroy()
            agreedFlags.store(0, ordering: .releasing)
            agreedMinor.store(0, ordering: .releasing)
            state.store(Self.waiting, ordering: .releasing)
            return Self.replyEmpty(unique, &w)

        case .lookup:
            let entry = try withName(&r, extensionLength, rule: .lookup) { (name, _) throws(Errno) in
                try fs.lookup(ctx, parent: node, name: name)
            }
            return Self.reply(fuse_entry_out(entry), unique, &w)

        case .forget:
            // No reply ever; a short one is simply ignored.
            if let arg = r.readWire(fuse_forget_in.self) { fs.forget(node, count: arg.nlookup) }
            return 0

        case .batchForget:
            guard let arg = r.readWire(fuse_batch_forget_in.self) else { return 0 }
            let (bytes, overflow) = Int(arg.count).multipliedReportingOverflow(by: MemoryLayout<fuse_forget_one>.size)
            guard !overflow, bytes <= r.remaining else { return 0 }
            for _ in 0..<Int(arg.count) {
                guard let one = r.readWire(fuse_forget_one.self) else { break }
                fs.forget(one.nodeid, count: one.nlookup)
            }
            return 0

        case .interrupt, .notifyReply:
            // We never wait on the guest, so there is nothing to interrupt or retrieve.
            return 0

        case .getattr:
            let arg = try Self.read(fuse_getattr_in.self, &r)
            let handle: HandleID? = arg.getattr_flags & UInt32(FUSE_GETATTR_FH) != 0 ? arg.fh : nil
            return Self.reply(fuse_attr_out(try fs.getattr(ctx, node: node, handle: handle)), unique, &w)

        case .setattr:
            let arg = try Self.read(fuse_setattr_in.self, &r)
            return Self.reply(fuse_attr_out(try fs.setattr(ctx, node: node, Self.decodeSetattr(arg))), unique, &w)

        case .readlink:
            guard let room = w.payloadRoom else { return 0 }
            let capacity = min(FuseWire.maxSymlinkTarget + 1, room)
            return try withUnsafeTemporaryAllocation(byteCount: FuseWire.maxSymlinkTarget + 1, alignment: 8) {
                (buffer) throws(Errno) -> Int in
                let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<capacity])
                let n = try fs.readlink(ctx, node: node, into: target)
                guard n >= 0, n <= capacity else { throw .ioError }
                return Self.replyBytes(UnsafeRawBufferPointer(rebasing: target[0..<n]), unique, &w)
            }

        case .symlink:
            let entry = try withNames(&r, extensionLength, firstRule: .create, secondRule: .symlinkTarget, umask: 0) {
                (name, target, extras) throws(Errno) in
                try fs.symlink(ctx, target: target, parent: node, name: name, extras: extras)
            }
            return Self.reply(fuse_entry_out(entry), unique, &w)

        case .mknod:
            let arg = try Self.read(fuse_mknod_in.self, &r)
            let entry = try withName(&r, extensionLength, rule: .create, umask: arg.umask) { (name, extras) throws(Errno) in
                try fs.mknod(ctx, parent: node, name: name, mode: arg.mode, rdev: arg.rdev, extras: extras)
            }
            return Self.reply(fuse_entry_out(entry), unique, &w)

        case .mkdir:
            let arg = try Self.read(fuse_mkdir_in.self, &r)
            let entry = try withName(&r, extensionLength, rule: .create, umask: arg.umask) { (name, extras) throws(Errno) in
                try fs.mkdir(ctx, parent: node, name: name, mode: arg.mode, extras: extras)
            }
            return Self.reply(fuse_entry_out(entry), unique, &w)

        case .unlink:
            try withName(&r, extensionLength, rule: .remove) { (name, _) throws(Errno) in
                try fs.unlink(ctx, parent: node, name: name)
            }
            return Self.replyEmpty(unique, &w)

        case .rmdir:
            try withName(&r, extensionLength, rule: .remove) { (name, _) throws(Errno) in
                try fs.rmdir(ctx, parent: node, name: name)
            }
            return Self.replyEmpty(unique, &w)

        case .rename, .rename2:
            let newParent: UInt64
            let flags: UInt32
            if opcode == .rename {
                newParent = try Self.read(fuse_rename_in.self, &r).newdir
                flags = 0
            } else {
                let arg = try Self.read(fuse_rename2_in.self, &r)
                newParent = arg.newdir
                flags = arg.flags
            }
            try withNames(&r, extensionLength, firstRule: .remove, secondRule: .remove) {
                (name, newName, _) throws(Errno) in
                try fs.rename(ctx, parent: node, name: name, newParent: newParent, newName: newName, flags: flags)
            }
            return Self.replyEmpty(unique, &w)

        case .link:
            let arg = try Self.read(fuse_link_in.self, &r)
            let entry = try withName(&r, extensionLength, rule: .create) { (name, _) throws(Errno) in
                try fs.link(ctx, node: arg.oldnodeid, newParent: node, newName: name)
            }
            return Self.reply(fuse_entry_out(entry), unique, &w)

        case .open:
            let arg = try Self.read(fuse_open_in.self, &r)
            let kill = arg.open_flags & UInt32(FUSE_OPEN_KILL_SUIDGID) != 0
            return Self.reply(fuse_open_out(try fs.open(ctx, node: node, flags: arg.flags, killSuidGid: kill)), unique, &w)

        case .read:
            let arg = try Self.read(fuse_read_in.self, &r)
            guard Int(arg.size) <= options.maxRead else { throw .invalidArgument }
            guard let room = w.payloadRoom else { return 0 }
            // A writer smaller than asked for gets what fits (a short read).
            let size = UInt32(min(Int(arg.size), room))
            // The header goes first; its length is filled in once the data is there.
            guard w.writeWire(fuse_out_header()) else { return 0 }
            let n = try fs.read(ctx, node: node, handle: arg.fh, offset: arg.offset, size: size, into: &w)
            guard n >= 0, n <= Int(size) else { throw .ioError }
            let total = FuseWire.outHeaderSize + n
            let out = fuse_out_header(len: UInt32(total), error: 0, unique: unique)
            return Self.finishHeader(out, &w, start: w.written - total)

        case .write:
            let arg = try Self.read(fuse_write_in.self, &r)
            guard Int(arg.size) <= options.maxWrite, Int(arg.size) <= r.remaining - extensionLength else {
                throw .invalidArgument
            }
            let kill = arg.write_flags & UInt32(FUSE_WRITE_KILL_SUIDGID) != 0
            let n = try fs.write(ctx, node: node, handle: arg.fh, offset: arg.offset, size: arg.size,
                                 flags: arg.flags, killSuidGid: kill, from: &r)
            guard n >= 0, n <= Int(arg.size) else { throw .ioError }
            var out = fuse_write_out()
            out.size = UInt32(n)
            return Self.reply(out, unique, &w)

        case .statfs:
            var out = fuse_statfs_out()
            out.st = fuse_kstatfs(try fs.statfs(ctx, node: node))
            return Self.reply(out, unique, &w)

        case .release, .releasedir:
            let arg = try Self.read(fuse_release_in.self, &r)
            let flush = arg.release_flags & UInt32(FUSE_RELEASE_FLUSH) != 0
            let flockRelease = arg.release_flags & UInt32(FUSE_RELEASE_FLOCK_UNLOCK) != 0
            do {
                if opcode == .release {
                    try fs.release(ctx, node: node, handle: arg.fh, flags: arg.flags,
                                   lockOwner: flush || flockRelease ? arg.lock_owner : nil,
                                   flush: flush, flockRelease: flockRelease)
                } else {
                    try fs.releasedir(ctx, node: node, handle: arg.fh, flags: arg.flags)
                }
            } catch {
                // The kernel has already let go of the file; the error has nowhere to go.
                logger.debug("\(opcode.name) of handle \(arg.fh) failed: \(errnoName(error))")
            }
            return Self.replyEmpty(unique, &w)

        case .fsync, .fsyncdir:
            let arg = try Self.read(fuse_fsync_in.self, &r)
            let datasync = arg.fsync_flags & UInt32(FUSE_FSYNC_FDATASYNC) != 0
            if opcode == .fsync {
                try fs.fsync(ctx, node: node, handle: arg.fh, datasync: datasync)
            } else {
                try fs.fsyncdir(ctx, node: node, handle: arg.fh, datasync: datasync)
            }
            return Self.replyEmpty(unique, &w)

        case .setxattr:
            try doSetxattr(ctx, node, extensionLength, &r)
            return Self.replyEmpty(unique, &w)

        case .getxattr:
            let arg = try Self.read(fuse_getxattr_in.self, &r)
            return try withName(&r, extensionLength, rule: .xattr) { (name, _) throws(Errno) -> Int in
                try Self.replyXattr(size: arg.size, unique, &w) { (buffer) throws(Errno) in
                    try fs.getxattr(ctx, node: node, name: name, into: buffer)
                }
            }

        case .listxattr:
            let arg = try Self.read(fuse_getxattr_in.self, &r)
            return try Self.replyXattr(size: arg.size, unique, &w) { (buffer) throws(Errno) in
                try fs.listxattr(ctx, node: node, into: buffer)
            }

        case .removexattr:
            try withName(&r, extensionLength, rule: .xattr) { (name, _) throws(Errno) in
                try fs.removexattr(ctx, node: node, name: name)
            }
            return Self.replyEmpty(unique, &w)

        case .flush:
            let arg = try Self.read(fuse_flush_in.self, &r)
            try fs.flush(ctx, node: node, handle: arg.fh, lockOwner: arg.lock_owner)
            return Self.replyEmpty(unique, &w)

        case .opendir:
            let arg = try Self.read(fuse_open_in.self, &r)
            return Self.reply(fuse_open_out(try fs.opendir(ctx, node: node, flags: arg.flags)), unique, &w)

        case .readdir, .readdirplus:
            let arg = try Self.read(fuse_read_in.self, &r)
            guard let room = w.payloadRoom else { return 0 }
            let size = min(Int(arg.size), options.maxWrite, room)
            let plus = opcode == .readdirplus
            return try withUnsafeTemporaryAllocation(byteCount: max(size, 1), alignment: 8) {
                (buffer) throws(Errno) -> Int in
                var packer = DirentPacker(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]), plus: plus)
                try fs.readdir(ctx, node: node, handle: arg.fh, offset: arg.offset, plus: plus, into: &packer)
                return Self.replyBytes(UnsafeRawBufferPointer(rebasing: buffer[0..<packer.used]), unique, &w)
            }

        case .getlk:
            let arg = try Self.read(fuse_lk_in.self, &r)
            let lock = try fs.getlk(ctx, node: node, handle: arg.fh, owner: arg.owner, lock: Self.decodeLock(arg.lk))
            var out = fuse_lk_out()
            out.lk = fuse_file_lock(start: lock.start, end: lock.end, type: UInt32(bitPattern: lock.type), pid: lock.pid)
            return Self.reply(out, unique, &w)

        case .setlk, .setlkw:
            let arg = try Self.read(fuse_lk_in.self, &r)
            try fs.setlk(ctx, node: node, handle: arg.fh, owner: arg.owner, lock: Self.decodeLock(arg.lk),
                         wait: opcode == .setlkw, flock: arg.lk_flags & UInt32(FUSE_LK_FLOCK) != 0)
            return Self.replyEmpty(unique, &w)

        case .access:
            let arg = try Self.read(fuse_access_in.self, &r)
            try fs.access(ctx, node: node, mask: arg.mask)
            return Self.replyEmpty(unique, &w)

        case .create:
            let arg = try Self.read(fuse_create_in.self, &r)
            let (entry, open) = try withName(&r, extensionLength, rule: .create, umask: arg.umask) { (name, extras) throws(Errno) in
                try fs.create(ctx, parent: node, name: name, mode: arg.mode, flags: arg.flags, extras: extras)
            }
            return Self.reply(fuse_entry_out(entry), fuse_open_out(open), unique, &w)

        case .tmpfile:
            let arg = try Self.read(fuse_create_in.self, &r)
            // No name: skip to the extensions.
            guard r.skip(r.remaining - extensionLength) else { throw .invalidArgument }
            let (entry, open) = try withCreateExtras(&r, extensionLength, umask: arg.umask) { (extras) throws(Errno) in
                try fs.tmpfile(ctx, parent: node, mode: arg.mode, flags: arg.flags, extras: extras)
            }
            return Self.reply(fuse_entry_out(entry), fuse_open_out(open), unique, &w)

        case .fallocate:
            let arg = try Self.read(fuse_fallocate_in.self, &r)
            try fs.fallocate(ctx, node: node, handle: arg.fh, mode: arg.mode, offset: arg.offset, length: arg.length)
            return Self.replyEmpty(unique, &w)

        case .lseek:
            let arg = try Self.read(fuse_lseek_in.self, &r)
            var out = fuse_lseek_out()
            out.offset = try fs.lseek(ctx, node: node, handle: arg.fh, offset: arg.offset, whence: arg.whence)
            return Self.reply(out, unique, &w)

        case .copyFileRange:
            let arg = try Self.read(fuse_copy_file_range_in.self, &r)
            // The reply carries a 32-bit count: never copy more than it can say.
            let length = min(arg.len, UInt64(UInt32.max) & ~4095)
            let n = try fs.copyFileRange(ctx, nodeIn: node, handleIn: arg.fh_in, offsetIn: arg.off_in,
                                         nodeOut: arg.nodeid_out, handleOut: arg.fh_out, offsetOut: arg.off_out,
                                         length: length, flags: arg.flags)
            guard n >= 0, UInt64(n) <= length else { throw .ioError }
            var out = fuse_write_out()
            out.size = UInt32(n)
            return Self.reply(out, unique, &w)

        case .syncfs:
            _ = try Self.read(fuse_syncfs_in.self, &r)
            try fs.syncfs(ctx, node: node)
            return Self.replyEmpty(unique, &w)

        case .ioctl:
            throw .notTTY
        case .bmap, .poll, .setupMapping, .removeMapping:
            throw .noSys
        }
    }

    // MARK: INIT

    private func doInit<R: FuseReader, W: FuseWriter>(_ h: fuse_in_header, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        // Kernels before 7.36 send only the first four fields.
        let legacySize = 16
        guard r.remaining >= legacySize else { throw .invalidArgument }
        var arg = fuse_init_in()
        let size = min(r.remaining, MemoryLayout<fuse_init_in>.size)
        let complete = withUnsafeMutableBytes(of: &arg) { r.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<size])) }
        guard complete else { throw .invalidArgument }

        guard state.compareExchange(expected: Self.waiting, desired: Self.initializing, ordering: .acquiringAndReleasing).exchanged else {
            throw .ioError
        }
        var done = false
        defer { if !done { state.store(Self.waiting, ordering: .releasing) } }

        if arg.major > FuseWire.kernelVersion {
            // Tell a newer guest which major we speak; it retries with that.
            var out = fuse_init_out()
            out.major = FuseWire.kernelVersion
            out.minor = FuseWire.kernelMinorVersion
            logger.info("guest offered FUSE \(arg.major).\(arg.minor); asking for \(FuseWire.kernelVersion)")
            return Self.reply(out, h.unique, &w)
        }
        guard arg.major == FuseWire.kernelVersion, arg.minor >= FuseWire.oldestMinorVersion else {
            logger.error("guest FUSE protocol \(arg.major).\(arg.minor) is too old (need 7.\(FuseWire.oldestMinorVersion))")
            throw .protocolError
        }

        var capable = UInt64(arg.flags)
        if capable & InitFlags.initExt.rawValue != 0 {
            capable |= UInt64(arg.flags2) << 32
        }
        let minor = min(arg.minor, FuseWire.kernelMinorVersion)
        if minor < 38 {
            // Security contexts and groups travel as request extensions, which need 7.38's total_extlen.
            capable &= ~(InitFlags.securityContext.rawValue | InitFlags.createSuppGroup.rawValue)
        }
        let wanted = try filesystem.initialize(capable: InitFlags(rawValue: capable))
        let agreed = (wanted.rawValue | Self.dispatcherFlags.rawValue) & capable

        var out = fuse_init_out()
        out.major = FuseWire.kernelVersion
        out.minor = minor
        out.max_readahead = arg.max_readahead
        out.flags = UInt32(truncatingIfNeeded: agreed)
        out.flags2 = UInt32(truncatingIfNeeded: agreed >> 32)
        // Let the guest keep as many requests in flight as it likes; the queues pace it.
        out.max_background = UInt16.max
        out.congestion_threshold = UInt16.max / 4 * 3
        out.max_write = UInt32(options.maxWrite)
        out.time_gran = 1
        out.max_pages = UInt16(options.maxPages)

        let length = Self.reply(out, h.unique, &w)
        guard length > 0 else { return 0 }
        agreedFlags.store(agreed, ordering: .releasing)
        agreedMinor.store(minor, ordering: .releasing)
        state.store(Self.running, ordering: .releasing)
        done = true
        logger.debug("INIT: guest 7.\(arg.minor), agreed 7.\(minor), flags 0x\(String(agreed, radix: 16))")
        return length
    }

    // MARK: SETXATTR

    private func doSetxattr<R: FuseReader>(_ ctx: RequestContext, _ node: NodeID, _ extensionLength: Int, _ r: inout R) throws(Errno) {
        // Without SETXATTR_EXT the kernel sends the 8-byte compat struct.
        let extended = negotiatedFlags.contains(.setxattrExt)
        var arg = fuse_setxattr_in()
        let fixed = extended ? MemoryLayout<fuse_setxattr_in>.size : Int(FUSE_COMPAT_SETXATTR_IN_SIZE)
        let complete = withUnsafeMutableBytes(of: &arg) { r.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<fixed])) }
        guard complete else { throw .invalidArgument }
        guard Int(arg.size) <= FuseWire.maxXattrSize else { throw .tooBig }
        let region = r.remaining - extensionLength
        guard region >= 0 else { throw .invalidArgument }
        // name + NUL + value, the name at most 255 bytes.
        guard region <= FuseWire.maxNameLength + 1 + Int(arg.size) else { throw .range }
        let fs = filesystem
        try withUnsafeTemporaryAllocation(byteCount: max(region, 1), alignment: 8) { (buffer) throws(Errno) in
            let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<region])
            guard r.read(into: bytes) else { throw .invalidArgument }
            guard let nul = bytes.firstIndex(of: 0) else { throw .invalidArgument }
            guard nul > 0, nul <= FuseWire.maxNameLength else { throw .range }
            guard region - (nul + 1) == Int(arg.size) else { throw .invalidArgument }
            guard let base = bytes.baseAddress else { throw .invalidArgument }
            let name = FileName(cString: base.assumingMemoryBound(to: CChar.self), count: nul)
            let value = UnsafeRawBufferPointer(rebasing: bytes[(nul + 1)...])
            try fs.setxattr(ctx, node: node, name: name, value: value, flags: arg.flags,
                            extFlags: extended ? arg.setxattr_flags : 0)
        }
    }

    // MARK: names

    /// How a decoded name is checked before the filesystem sees it.
    enum NameRule {
        /// LOOKUP: "." and ".." reach the filesystem (the kernel asks for them when exporting over NFS).
        case lookup
        /// Making a new name: "." and ".." already exist.
        case create
        /// Unlink, rmdir, rename: "." and ".." are not names that can be removed.
        case remove
        /// An xattr name: not a path component; too long or empty is ERANGE, as setxattr(2) says.
        case xattr
        /// A symlink target: any non-empty bytes up to PATH_MAX.
        case symlinkTarget

        var maxLength: Int { self == .symlinkTarget ? FuseWire.maxSymlinkTarget : FuseWire.maxNameLength }
        var tooLong: Errno { self == .xattr ? .range : .nameTooLong }

        func check(_ name: FileName) throws(Errno) {
            switch self {
            case .xattr:
                guard name.count > 0 else { throw .range }
            case .symlinkTarget:
                guard name.count > 0 else { throw .noEntry }
            case .lookup, .create, .remove:
                guard name.count > 0, !name.containsSlash else { throw .invalidArgument }
                if name.isDotOrDotDot {
                    if self == .create { throw .exists }
                    if self == .remove { throw .invalidArgument }
                }
            }
        }
    }

    /// Copies the one NUL-terminated name that sits between the op struct and the
    /// extensions into a stack buffer and calls `body` with it.
    /// With `umask` set (creating ops), the request extensions are decoded too.
    private func withName<R: FuseReader, T>(
        _ r: inout R, _ extensionLength: Int, rule: NameRule, umask: UInt32? = nil,
        _ body: (FileName, CreateExtras) throws(Errno) -> T
    ) throws(Errno) -> T {
        let region = r.remaining - extensionLength
        guard region > 0 else { throw .invalidArgument }
        guard region <= rule.maxLength + 1 else { throw rule.tooLong }
        return try withUnsafeTemporaryAllocation(byteCount: rule.maxLength + 1, alignment: 8) {
            (buffer) throws(Errno) -> T in
            let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<region])
            guard r.read(into: bytes) else { throw .invalidArgument }
            let name = try Self.cutName(bytes, from: 0, to: region, rule: rule)
            guard let umask else { return try body(name, CreateExtras()) }
            return try withCreateExtras(&r, extensionLength, umask: umask) { (extras) throws(Errno) in
                try body(name, extras)
            }
        }
    }

    /// Two NUL-terminated names back to back (RENAME's old and new, SYMLINK's name and target).
    private func withNames<R: FuseReader, T>(
        _ r: inout R, _ extensionLength: Int, firstRule: NameRule, secondRule: NameRule, umask: UInt32? = nil,
        _ body: (FileName, FileName, CreateExtras) throws(Errno) -> T
    ) throws(Errno) -> T {
        let region = r.remaining - extensionLength
        let capacity = firstRule.maxLength + 1 + secondRule.maxLength + 1
        guard region > 0 else { throw .invalidArgument }
        guard region <= capacity else { throw .nameTooLong }
        return try withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 8) {
            (buffer) throws(Errno) -> T in
            let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<region])
            guard r.read(into: bytes) else { throw .invalidArgument }
            guard let nul = bytes.firstIndex(of: 0) else { throw .invalidArgument }
            let first = try Self.cutName(bytes, from: 0, to: nul + 1, rule: firstRule)
            let second = try Self.cutName(bytes, from: nul + 1, to: region, rule: secondRule)
            guard let umask else { return try body(first, second, CreateExtras()) }
            return try withCreateExtras(&r, extensionLength, umask: umask) { (extras) throws(Errno) in
                try body(first, second, extras)
            }
        }
    }

    /// The name in `bytes[from..<to]`, which must end with its only NUL.
    static func cutName(_ bytes: UnsafeMutableRawBufferPointer, from: Int, to: Int, rule: NameRule) throws(Errno) -> FileName {
        guard from < to, let base = bytes.baseAddress else { throw .invalidArgument }
        let slice = UnsafeRawBufferPointer(start: base + from, count: to - from)
        guard let nul = slice.firstIndex(of: 0), nul == slice.count - 1 else { throw .invalidArgument }
        guard nul <= rule.maxLength else { throw rule.tooLong }
        let name = FileName(cString: (base + from).assumingMemoryBound(to: CChar.self), count: nul)
        try rule.check(name)
        return name
    }

    // MARK: request extensions

    /// Reads the request extensions that follow a creating op's names and calls
    /// `body` with the umask and whatever security context and group they carry.
    private func withCreateExtras<R: FuseReader, T>(
        _ r: inout R, _ extensionLength: Int, umask: UInt32, _ body: (CreateExtras) throws(Errno) -> T
    ) throws(Errno) -> T {
        var extras = CreateExtras()
        extras.umask = umask
        guard extensionLength > 0 else { return try body(extras) }
        guard extensionLength <= FuseWire.maxExtensionBytes else { throw .tooBig }
        return try withUnsafeTemporaryAllocation(byteCount: extensionLength, alignment: 8) {
            (buffer) throws(Errno) -> T in
            guard r.read(into: buffer) else { throw .invalidArgument }
            try Self.parseExtensions(UnsafeRawBufferPointer(buffer), into: &extras)
            return try body(extras)
        }
    }

    /// Walks `fuse_ext_header` records: types 0...31 are a security-context header
    /// (the type is the number of contexts), CVFS_FUSE_EXT_GROUPS the caller's groups.
    /// Unknown types are skipped; a record that overruns the area is EINVAL.
    static func parseExtensions(_ area: UnsafeRawBufferPointer, into extras: inout CreateExtras) throws(Errno) {
        func u32(_ at: Int) -> UInt32 { area.loadUnaligned(fromByteOffset: at, as: UInt32.self) }
        let headerSize = MemoryLayout<fuse_ext_header>.size
        var offset = 0
        while offset < area.count {
            guard area.count - offset >= headerSize else { throw .invalidArgument }
            let size = Int(u32(offset))
            let type = u32(offset + 4)
            guard size >= headerSize, size % 8 == 0, size <= area.count - offset else { throw .invalidArgument }
            let end = offset + size
            if type <= UInt32(FUSE_MAX_NR_SECCTX.rawValue) {
                // The kernel sends at most one context; later ones are ignored.
                if type >= 1 {
                    let contextStart = offset + headerSize
                    let contextHeader = MemoryLayout<fuse_secctx>.size
                    guard end - contextStart >= contextHeader else { throw .invalidArgument }
                    let valueLength = Int(u32(contextStart))
                    let nameStart = contextStart + contextHeader
                    let rest = UnsafeRawBufferPointer(rebasing: area[nameStart..<end])
                    guard let nul = rest.firstIndex(of: 0) else { throw .invalidArgument }
                    guard nul > 0, nul <= FuseWire.maxNameLength else { throw .invalidArgument }
                    let valueStart = nameStart + nul + 1
                    guard valueLength <= end - valueStart else { throw .invalidArgument }
                    guard let base = area.baseAddress else { throw .invalidArgument }
                    extras.securityContextName = FileName(
                        cString: (base + nameStart).assumingMemoryBound(to: CChar.self), count: nul)
                    extras.securityContextValue = UnsafeRawBufferPointer(start: base + valueStart, count: valueLength)
                }
            } else if type == UInt32(CVFS_FUSE_EXT_GROUPS) {
                let groupsStart = offset + headerSize
                guard end - groupsStart >= 4 else { throw .invalidArgument }
                let count = Int(u32(groupsStart))
                guard count <= (end - groupsStart - 4) / 4 else { throw .invalidArgument }
                if count >= 1 { extras.supplementaryGroup = u32(groupsStart + 4) }
            }
            offset = end
        }
    }

    // MARK: decoding helpers

    @inline(__always)
    static func read<T, R: FuseReader>(_ type: T.Type, _ r: inout R) throws(Errno) -> T {
        guard let value = r.readWire(T.self) else { throw .invalidArgument }
        return value
    }

    static func decodeSetattr(_ a: fuse_setattr_in) -> SetAttributes {
        var s = SetAttributes(valid: SetAttributesValid(rawValue: a.valid))
        s.mode = a.mode
        s.uid = a.uid
        s.gid = a.gid
        s.size = a.size
        s.atime = timespec(tv_sec: Int(truncatingIfNeeded: a.atime), tv_nsec: Int(a.atimensec))
        s.mtime = timespec(tv_sec: Int(truncatingIfNeeded: a.mtime), tv_nsec: Int(a.mtimensec))
        s.ctime = timespec(tv_sec: Int(truncatingIfNeeded: a.ctime), tv_nsec: Int(a.ctimensec))
        if s.valid.contains(.handle) { s.handle = a.fh }
        if s.valid.contains(.lockOwner) { s.lockOwner = a.lock_owner }
        return s
    }

    static func decodeLock(_ l: fuse_file_lock) -> FileLock {
        FileLock(start: l.start, end: l.end, type: Int32(bitPattern: l.type), pid: l.pid)
    }

    // MARK: reply encoding

    static func header(_ length: Int, _ error: Int32, _ unique: UInt64) -> fuse_out_header {
        fuse_out_header(len: UInt32(length), error: error, unique: unique)
    }

    /// An error reply: just the header. If something was already written (READ's
    /// header), the header is rewritten in place and the rest is ignored.
    static func replyError<W: FuseWriter>(_ e: Errno, _ unique: UInt64, _ w: inout W, start: Int) -> Int {
        var out = header(FuseWire.outHeaderSize, -e.rawValue, unique)
        let done = withUnsafeBytes(of: &out) { bytes in
            w.written == start ? w.write(bytes) : w.overwrite(bytes, at: start)
        }
        return done ? FuseWire.outHeaderSize : 0
    }

    static func replyEmpty<W: FuseWriter>(_ unique: UInt64, _ w: inout W) -> Int {
        w.writeWire(header(FuseWire.outHeaderSize, 0, unique)) ? FuseWire.outHeaderSize : 0
    }

    static func reply<T, W: FuseWriter>(_ payload: T, _ unique: UInt64, _ w: inout W) -> Int {
        let total = FuseWire.outHeaderSize + MemoryLayout<T>.size
        // Check first so a too-small writer gets nothing rather than half a reply.
        guard w.available >= total else { return 0 }
        guard w.writeWire(header(total, 0, unique)), w.writeWire(payload) else { return 0 }
        return total
    }

    static func reply<T, U, W: FuseWriter>(_ a: T, _ b: U, _ unique: UInt64, _ w: inout W) -> Int {
        let total = FuseWire.outHeaderSize + MemoryLayout<T>.size + MemoryLayout<U>.size
        guard w.available >= total else { return 0 }
        guard w.writeWire(header(total, 0, unique)), w.writeWire(a), w.writeWire(b) else { return 0 }
        return total
    }

    static func replyBytes<W: FuseWriter>(_ payload: UnsafeRawBufferPointer, _ unique: UInt64, _ w: inout W) -> Int {
        let total = FuseWire.outHeaderSize + payload.count
        guard w.available >= total else { return 0 }
        guard w.writeWire(header(total, 0, unique)), w.write(payload) else { return 0 }
        return total
    }

    /// Fills in a header written ahead of its payload.
    static func finishHeader<W: FuseWriter>(_ out: fuse_out_header, _ w: inout W, start: Int) -> Int {
        var copy = out
        let done = withUnsafeBytes(of: &copy) { w.overwrite($0, at: start) }
        let length = Int(out.len)
        assert(!done || w.written - start == length, "reply header length disagrees with the bytes written")
        return done ? length : 0
    }

    /// GETXATTR / LISTXATTR: a size query (size 0) gets `fuse_getxattr_out`, otherwise the bytes.
    static func replyXattr<W: FuseWriter>(
        size: UInt32, _ unique: UInt64, _ w: inout W, _ fill: (UnsafeMutableRawBufferPointer?) throws(Errno) -> Int
    ) throws(Errno) -> Int {
        if size == 0 {
            let n = try fill(nil)
            guard n >= 0 else { throw .ioError }
            // A value larger than the protocol can carry would only fail later.
            guard n <= FuseWire.maxXattrSize else { throw .tooBig }
            var out = fuse_getxattr_out()
            out.size = UInt32(n)
            return reply(out, unique, &w)
        }
        guard let room = w.payloadRoom else { return 0 }
        let capacity = min(Int(size), FuseWire.maxXattrSize, room)
        return try withUnsafeTemporaryAllocation(byteCount: max(capacity, 1), alignment: 8) {
            (buffer) throws(Errno) -> Int in
            let value = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<capacity])
            let n = try fill(value)
            guard n >= 0, n <= capacity else { throw .ioError }
            return replyBytes(UnsafeRawBufferPointer(rebasing: value[0..<n]), unique, &w)
        }
    }
}

// Reading and writing one fixed-layout wire struct. No `BitwiseCopyable`
// constraint: release builds serialise the dispatcher for cross-module
// specialisation, and Swift 6.3 cannot deserialise the implicit `BitwiseCopyable`
// conformances of the imported FUSE structs (the compiler crashes). Only the
// kernel's plain C structs are passed here.
extension FuseReader {
    @inline(__always)
    mutating func readWire<T>(_ type: T.Type = T.self) -> T? {
        assert(_isPOD(T.self), "wire structs are plain data")
        return withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { slot -> T? in
            guard read(into: UnsafeMutableRawBufferPointer(slot)) else { return nil }
            return slot[0]
        }
    }
}

extension FuseWriter {
    /// Bytes a reply's payload may take after its header; nil if not even the header fits.
    @inline(__always)
    var payloadRoom: Int? {
        available >= FuseWire.outHeaderSize ? available - FuseWire.outHeaderSize : nil
    }

    @inline(__always)
    mutating func writeWire<T>(_ value: T) -> Bool {
        assert(_isPOD(T.self), "wire structs are plain data")
        var copy = value
        return withUnsafeBytes(of: &copy) { write($0) }
    }
}
