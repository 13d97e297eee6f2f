#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix
import Synchronization

extension PassthroughFileSystem {
    // MARK: - Session

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

    // MARK: - Attributes

    public func getattr(_ ctx: RequestContext, node: NodeID, handle: HandleID?) throws(Errno) -> AttributesReply {
        if let handle, let file = handles.withLock({ $0.files[handle] }) {
            return attributesReply(try Sys.fstat(file.fd))
        }
        return attributesReply(try stat(try inode(node)))
    }

    public func setattr(_ ctx: RequestContext, node: NodeID, _ attributes: SetAttributes) throws(Errno) -> AttributesReply {
        try ensureWritable()
        let data = try inode(node)
        let valid = attributes.valid
        let file: OpenFile? = try attributes.handle.map { (h) throws(Errno) -> OpenFile in try openFile(h) }
        let killPriv = valid.contains(.killSuidGid) && isNegotiated(.handleKillprivV2)

        if valid.contains(.mode) {
            var mode = attributes.mode & 0o7777
            if killPriv && ctx.uid != 0 {
                // As chmod by a caller outside the file's group: setgid does not survive.
                let st = try stat(data)
                if st.st_gid != callerHostGID(ctx.gid) { mode &= ~S_ISGID }
            }
            if let file {
                try Sys.fchmod(file.fd, mode)
            } else {
                // Through the magic link: reaches the file itself (a symlink is not followed further).
                try data.withPathFD { (fd) throws(Errno) in
                    try withProcName(fd) { (name) throws(Errno) in try Sys.fchmodat(procSelfFD, name, mode, flags: 0) }
                }
            }
        }
        if valid.contains(.uid) || valid.contains(.gid) {
            let (uid, gid) = try hostOwner(uid: valid.contains(.uid) ? attributes.uid : UInt32.max,
                                           gid: valid.contains(.gid) ? attributes.gid : UInt32.max)
            try data.withPathFD { (fd) throws(Errno) in
                try Sys.fchownat(fd, "", uid, gid, flags: CVFS_AT_EMPTY_PATH | CVFS_AT_SYMLINK_NOFOLLOW)
            }
            killRemappedCapability(data)
        }
        if valid.contains(.size) {
            guard attributes.size <= UInt64(Int64.max) else { throw Errno.fileTooLarge }
            let size = Int64(attributes.size)
            // Setuid/setgid go first, as the kernel clears them with the truncate itself.
            let flagged = valid.contains(.killSuidGid)
            if let file {
                clearSetIDForTruncate(fd: file.fd, ctx, flagged: flagged)
                try Sys.ftruncate(file.fd, size)
            } else {
                guard data.isRegular else { throw data.isDirectory ? Errno.isDirectory : Errno.invalidArgument }
                try withIOFD(data, flags: O_WRONLY) { (fd) throws(Errno) in
                    clearSetIDForTruncate(fd: fd, ctx, flagged: flagged)
                    try Sys.ftruncate(fd, size)
                }
            }
            killRemappedCapability(data)
        }
        if !valid.intersection([.atime, .mtime, .atimeNow, .mtimeNow]).isEmpty {
            func time(_ set: Bool, _ now: Bool, _ value: timespec) -> timespec {
                if now { return timespec(tv_sec: 0, tv_nsec: CVFS_UTIME_NOW) }
                if set { return value }
                return timespec(tv_sec: 0, tv_nsec: CVFS_UTIME_OMIT)
            }
            let times = (time(valid.contains(.atime), valid.contains(.atimeNow), attributes.atime),
                         time(valid.contains(.mtime), valid.contains(.mtimeNow), attributes.mtime))
            if let file {
                try Sys.futimens(file.fd, times)
            } else {
                // The magic link leads to the file itself, symlinks included; it is not followed further.
                try data.withPathFD { (fd) throws(Errno) in
                    try withProcName(fd) { (name) throws(Errno) in try Sys.utimensat(procSelfFD, name, times, flags: 0) }
                }
            }
        }
        if let file { return attributesReply(try Sys.fstat(file.fd)) }
        return attributesReply(try stat(data))
    }

    // MARK: - Files

    public func read<W: FuseWriter>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, size: UInt32, into writer: inout W) throws(Errno) -> Int {
        let file = try openFile(handle)
        guard offset <= UInt64(Int64.max) else { throw Errno.invalidArgument }
        let count = min(Int(size), writer.available)
        if count <= 0 { return 0 }
        let fd = file.fd
        let result = try writer.withIOVecs(count: count) { (iov) throws(Errno) -> Int in
            try Sys.preadv(fd, iov, Int64(offset))
        }
        guard let result else { throw Errno.invalidArgument }
        return result
    }

    public func write<R: FuseReader>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, size: UInt32, flags: UInt32, killSuidGid: Bool, from reader: inout R) throws(Errno) -> Int {
        try ensureWritable()
        let file = try openFile(handle)
        guard offset <= UInt64(Int64.max), UInt64(Int64.max) - offset >= UInt64(size) else { throw Errno.fileTooLarge }
        let fd = file.fd
        // Honoured whatever was negotiated: for direct I/O (cache=none, metadata) the
        // guest kernel leaves the clearing to us even without killpriv v2.
        if killSuidGid { clearSetIDForWrite(fd: fd, callerGID: ctx.gid) }
        let written = try reader.withIOVecs(count: Int(size)) { (iov) throws(Errno) -> Int in
            try Sys.pwritev(fd, iov, Int64(offset))
        }
        guard let written else { throw Errno.invalidArgument }
        killRemappedCapability(fd: fd)
        return written
    }

    public func statfs(_ ctx: RequestContext, node: NodeID) throws(Errno) -> statvfs {
        let data = try inode(node)
        return try data.withPathFD { (fd) throws(Errno) -> statvfs in try Sys.fstatvfs(fd) }
    }

    public func fsync(_ ctx: RequestContext, node: NodeID, handle: HandleID, datasync: Bool) throws(Errno) {
        let file = try openFile(handle)
        if datasync { try Sys.fdatasync(file.fd) } else { try Sys.fsync(file.fd) }
    }

    public func flush(_ ctx: RequestContext, node: NodeID, handle: HandleID, lockOwner: UInt64) throws(Errno) {
        // Locks are open-file-description locks, released with the handle, not per close(2).
        _ = try openFile(handle)
    }

    public func fsyncdir(_ ctx: RequestContext, node: NodeID, handle: HandleID, datasync: Bool) throws(Errno) {
        try fsync(ctx, node: node, handle: handle, datasync: datasync)
    }

    public func fallocate(_ ctx: RequestContext, node: NodeID, handle: HandleID, mode: UInt32, offset: UInt64, length: UInt64) throws(Errno) {
        try ensureWritable()
        let file = try openFile(handle)
        guard offset <= UInt64(Int64.max), length <= UInt64(Int64.max) else { throw Errno.fileTooLarge }
        try Sys.fallocate(file.fd, mode: Int32(bitPattern: mode), offset: Int64(offset), length: Int64(length))
    }

    public func lseek(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, whence: UInt32) throws(Errno) -> UInt64 {
        let file = try openFile(handle)
        guard offset <= UInt64(Int64.max) else { throw Errno.invalidArgument }
        let position = try Sys.lseek(file.fd, Int64(offset), Int32(bitPattern: whence))
        return UInt64(max(0, position))
    }

    public func copyFileRange(_ ctx: RequestContext, nodeIn: NodeID, handleIn: HandleID, offsetIn: UInt64,
                              nodeOut: NodeID, handleOut: HandleID, offsetOut: UInt64, length: UInt64, flags: UInt64) throws(Errno) -> Int {
        try ensureWritable()
        let source = try openFile(handleIn)
        let target = try openFile(handleOut)
        guard offsetIn <= UInt64(Int64.max), offsetOut <= UInt64(Int64.max), flags <= UInt64(UInt32.max) else { throw Errno.invalidArgument }
        let count = Int(clamping: min(length, UInt64(Int.max)))
        return try Sys.copyFileRange(source.fd, Int64(offsetIn), target.fd, Int64(offsetOut), count, flags: UInt32(flags))
    }

    /// Syncs the shared directory's filesystem and every submount seen below it.
    public func syncfs(_ ctx: RequestContext, node: NodeID) throws(Errno) {
        _ = try inode(node)
        let mounts = inodes.mountFDs.withLock { Array($0.values) }
        if mounts.isEmpty {
            try withIOFD(root, flags: O_RDONLY) { (fd) throws(Errno) in try Sys.syncfs(fd) }
        }
        // The descriptors live as long as the filesystem object, which the caller holds.
        for fd in mounts { try Sys.syncfs(fd) }
    }

    // MARK: - Access

    public func access(_ ctx: RequestContext, node: NodeID, mask: UInt32) throws(Errno) {
        let data = try inode(node)
        let wanted = Int32(bitPattern: mask) & (R_OK | W_OK | X_OK)
        if wanted & W_OK != 0 && configuration.readOnly { throw Errno.readOnlyFileSystem }
        // The host kernel decides, with the caller's ids: mode bits, ACLs, read-only mounts.
        try data.withPathFD { (fd) throws(Errno) in
            try credentials.run(ctx, supplementaryGroup: nil) { () throws(Errno) in
                try Sys.faccessat(fd, "", wanted, flags: AT_EACCESS | CVFS_AT_EMPTY_PATH | CVFS_AT_SYMLINK_NOFOLLOW)
            }
        }
    }
}
