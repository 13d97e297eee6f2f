#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix

extension PassthroughFileSystem {
    /// GETATTR: fstat of the open file when the request names a handle we hold, else a
    /// stat of the node's descriptor (a symlink is not followed); owners as guest ids.
    public func getattr(_ ctx: RequestContext, node: NodeID, handle: HandleID?) throws(Errno) -> AttributesReply {
        if let handle, let file = handles.withLock({ $0.files[handle] }) {
            return attributesReply(try Sys.fstat(file.fd))
        }
        return attributesReply(try stat(try inode(node)))
    }

    /// FUSE_ATTR_* flags for `node`'s attributes: FUSE_ATTR_SUBMOUNT for a submount root
    /// when `announceSubmounts` is on (entries carry them in `Entry.attributeFlags`;
    /// this is for GETATTR replies, whose `AttributesReply` has no such field).
    public func attributeFlags(for node: NodeID) -> UInt32 {
        inodes.isSubmount(node) ? UInt32(FUSE_ATTR_SUBMOUNT) : 0
    }

    /// SETATTR: mode, owner, size and times, in that order, on the open file when a
    /// handle is given, else on the node (a size only on a regular file). When the request
    /// asks (killpriv v2), a chmod by a caller other than root outside the file's group
    /// drops setgid; setuid and setgid go before a truncate as `truncateClearsSetID`
    /// decides; a renamed
    /// security.capability goes on chown and truncate. EROFS on a read-only share.
    /// Replies with the attributes after the change.
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

    func stat(_ inode: InodeData) throws(Errno) -> stat {
        try inode.withPathFD { (fd) throws(Errno) -> stat in
            try Sys.fstatat(fd, "", flags: CVFS_AT_EMPTY_PATH | CVFS_AT_SYMLINK_NOFOLLOW)
        }
    }

    /// STATFS: fstatvfs of the filesystem the node is on.
    public func statfs(_ ctx: RequestContext, node: NodeID) throws(Errno) -> statvfs {
        let data = try inode(node)
        return try data.withPathFD { (fd) throws(Errno) -> statvfs in try Sys.fstatvfs(fd) }
    }

    /// ACCESS: faccessat as the caller (AT_EACCESS), so the host kernel decides with mode
    /// bits, ACLs and read-only mounts; write access on a read-only share is EROFS.
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
