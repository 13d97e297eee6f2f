#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix

extension PassthroughFileSystem {
    // MARK: - CREATE and TMPFILE

    /// CREATE: opens `name` below the parent with O_CREAT and O_EXCL as the caller, with
    /// the host mode; a name that exists when the guest did not ask for O_EXCL is opened as
    /// `openExisting` says. Returns the entry (one lookup) and a handle. EMFILE before the
    /// daemon's descriptor reserve is touched.
    public func create(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, flags: UInt32, extras: CreateExtras) throws(Errno) -> (Entry, OpenReply) {
        try ensureWritable()
        try checkName(name)
        try ensureDescriptorHeadroom()
        let directory = try inode(parent)
        let hostMode = creationMode(mode, parent: directory, extras: extras)
        // Always O_EXCL on the host: open(2) of an existing FIFO would block the queue
        // thread and of a device node would open the host device. An existing name
        // is handled by openExisting, which opens regular files only.
        let hostFlags = hostOpenFlags(flags) | O_CREAT | O_EXCL | O_NOFOLLOW
        let fd: Int32
        do {
            fd = try directory.withPathFD { (pfd) throws(Errno) -> Int32 in
                try credentials.run(ctx, supplementaryGroup: extras.supplementaryGroup) { () throws(Errno) -> Int32 in
                    try Sys.openat(pfd, name.cString, hostFlags, hostMode)
                }
            }
        } catch {
            guard error == .exists, Int32(bitPattern: flags) & O_EXCL == 0 else { throw error }
            return try openExisting(ctx, directory, name, flags: flags, supplementaryGroup: extras.supplementaryGroup)
        }
        return try finishOpenCreation(fd: fd, extras: extras)
    }

    /// CREATE of a name that exists (the guest asked without O_EXCL): someone else made
    /// it between the guest's lookup and its CREATE. The guest kernel believes it made
    /// the file and checked no permission, so the host kernel checks here: the file is
    /// opened under the caller's credentials, and O_TRUNC truncates (and clears
    /// setuid/setgid) as the caller would. Only a regular file is opened, as OPEN would:
    /// never a FIFO, socket or device node; a symlink is ELOOP, a directory EISDIR.
    func openExisting(_ ctx: RequestContext, _ directory: InodeData, _ name: FileName, flags: UInt32,
                      supplementaryGroup: UInt32?) throws(Errno) -> (Entry, OpenReply) {
        // The daemon's own O_PATH descriptor of what is there now; its type cannot change.
        let pathFD = try openChild(directory, name.cString)
        let fd: Int32
        do throws(Errno) {
            let st = try Sys.fstatat(pathFD, "", flags: CVFS_AT_EMPTY_PATH | CVFS_AT_SYMLINK_NOFOLLOW)
            switch st.st_mode & S_IFMT {
            case S_IFREG: break
            case S_IFDIR: throw Errno.isDirectory
            case S_IFLNK: throw Errno.loop
            default: throw Errno.permissionDenied
            }
            let hostFlags = hostOpenFlags(flags)
            // The caller's fsuid/fsgid and groups: the host kernel checks the mode bits,
            // ACLs and O_TRUNC's need for write access.
            fd = try credentials.run(ctx, supplementaryGroup: supplementaryGroup) { () throws(Errno) -> Int32 in
                try withProcName(pathFD) { (link) throws(Errno) -> Int32 in try Sys.openat(procSelfFD, link, hostFlags) }
            }
        } catch {
            Sys.close(pathFD)
            throw error
        }
        return try enterOpenedFile(fd: fd, pathFD: pathFD)
    }

    /// TMPFILE: an unnamed file in the parent (O_TMPFILE; a read-only open becomes
    /// read-write, as O_TMPFILE needs) made as the caller; returns its entry (one lookup)
    /// and a handle. EMFILE before the daemon's descriptor reserve is touched.
    public func tmpfile(_ ctx: RequestContext, parent: NodeID, mode: UInt32, flags: UInt32, extras: CreateExtras) throws(Errno) -> (Entry, OpenReply) {
        try ensureWritable()
        try ensureDescriptorHeadroom()
        let directory = try inode(parent)
        let hostMode = creationMode(mode, parent: directory, extras: extras)
        var hostFlags = hostOpenFlags(flags) | CVFS_O_TMPFILE
        if hostFlags & O_ACCMODE == O_RDONLY { hostFlags |= O_RDWR } // O_TMPFILE needs write access
        let fd = try directory.withPathFD { (pfd) throws(Errno) -> Int32 in
            try credentials.run(ctx, supplementaryGroup: extras.supplementaryGroup) { () throws(Errno) -> Int32 in
                try Sys.openat(pfd, ".", hostFlags, hostMode)
            }
        }
        return try finishOpenCreation(fd: fd, extras: extras)
    }

    /// Turns a freshly created open file into an entry (with its own O_PATH descriptor) and a handle.
    func finishOpenCreation(fd: Int32, extras: CreateExtras) throws(Errno) -> (Entry, OpenReply) {
        let pathFD: Int32
        do {
            try applySecurityContext(extras, fd: fd, inode: root)
            pathFD = try withProcName(fd) { (name) throws(Errno) -> Int32 in try Sys.openat(procSelfFD, name, CVFS_O_PATH) }
        } catch {
            Sys.close(fd)
            throw error
        }
        return try enterOpenedFile(fd: fd, pathFD: pathFD)
    }

    /// The end of CREATE and TMPFILE: enters `pathFD`, an O_PATH descriptor of the
    /// regular file `fd` has open, into the inode table with one lookup, and `fd` into
    /// the handle table. Takes both descriptors; on failure both are closed and no
    /// lookup is left behind.
    func enterOpenedFile(fd: Int32, pathFD: Int32) throws(Errno) -> (Entry, OpenReply) {
        let entry: Entry
        let data: InodeData
        do throws(Errno) {
            entry = try adopt(pathFD)
            do throws(Errno) {
                data = try inode(entry.nodeID)
            } catch {
                forget(entry.nodeID, count: 1)
                throw error
            }
        } catch {
            Sys.close(fd)
            throw error
        }
        let handle = registerHandle(fd: fd, inode: data)
        return (entry, OpenReply(handle: handle, flags: openReplyFlags(directory: false)))
    }

    // MARK: - Mode and security label of a new node

    /// The mode a creation request should use on the host.
    func creationMode(_ mode: UInt32, parent: InodeData, extras: CreateExtras) -> mode_t {
        guard isNegotiated(.dontMask) else { return mode }
        // With POSIX ACLs the kernel left the umask to us; a default ACL on the parent replaces it.
        if configuration.posixACL, parentHasDefaultACL(parent) { return mode }
        return mode & ~(extras.umask & 0o777)
    }

    func parentHasDefaultACL(_ parent: InodeData) -> Bool {
        let size = try? withIOFD(parent, flags: O_RDONLY | O_DIRECTORY) { (fd) throws(Errno) -> Int in
            try Sys.fgetxattr(fd, "system.posix_acl_default", nil)
        }
        return (size ?? 0) > 0
    }

    /// Sets the security context the guest sent on a node just created, before the entry is returned.
    /// Window: the node is visible on the host between its creation and this call.
    func applySecurityContext(_ extras: CreateExtras, fd: Int32?, inode: InodeData) throws(Errno) {
        guard configuration.securityLabel, let name = extras.securityContextName,
              let value = extras.securityContextValue else { return }
        if let fd {
            try Sys.fsetxattr(fd, name.cString, value, flags: 0)
            return
        }
        try withXattrTarget(inode, fd: { (fd) throws(Errno) in
            try Sys.fsetxattr(fd, name.cString, value, flags: 0)
        }, path: { (path) throws(Errno) in
            try Sys.setxattr(path, name.cString, value, flags: 0)
        })
    }

    /// After a creation: looks the new name up and labels it.
    func finishCreation(_ parent: InodeData, _ name: FileName, extras: CreateExtras) throws(Errno) -> Entry {
        let entry = try lookupChild(parent, name.cString)
        do {
            try applySecurityContext(extras, fd: nil, inode: try inode(entry.nodeID))
        } catch {
            forget(entry.nodeID, count: 1)
            throw error
        }
        return entry
    }

    // MARK: - Setuid and setgid on write and truncate

    /// Whether a truncate (SETATTR size, OPEN with O_TRUNC) by `ctx` clears setuid/setgid.
    /// With killpriv v2 the guest kernel says so (`flagged`: the caller lacks CAP_FSETID,
    /// the owner included, as on any Linux filesystem). Without it the guest kernel sends
    /// no such flag with O_TRUNC and its own SETATTR of the mode is lost when OPEN
    /// truncates, so the bits go whenever the caller is neither root nor the owner: the
    /// owner could set them again anyway, anyone else must not keep them.
    func truncateClearsSetID(_ ctx: RequestContext, flagged: Bool, owner: uid_t) -> Bool {
        if isNegotiated(.handleKillprivV2) { return flagged }
        // The caller is a guest id; so is the owner once translated (`--translate-uid`).
        let guestOwner = idTranslation.map { $0.uid.toGuest(owner) } ?? owner
        return flagged || (ctx.uid != 0 && ctx.uid != guestOwner)
    }

    /// After (or before) a truncate of `fd` by `ctx`: clears the bits when
    /// `truncateClearsSetID` says so. Best effort: the truncate is what was asked for.
    func clearSetIDForTruncate(fd: Int32, _ ctx: RequestContext, flagged: Bool) {
        guard let st = try? Sys.fstat(fd), st.st_mode & S_IFMT == S_IFREG,
              st.st_mode & (S_ISUID | S_ISGID) != 0 else { return }
        guard truncateClearsSetID(ctx, flagged: flagged, owner: st.st_uid) else { return }
        clearSetID(fd: fd, mode: st.st_mode, fileGID: st.st_gid, callerGID: ctx.gid)
    }

    /// The kernel's rule for a caller without CAP_FSETID who writes to or truncates a
    /// regular file: setuid always goes; setgid goes when the group may execute (a real
    /// setgid program) or the caller is outside the file's group (only the caller's
    /// primary group is known here).
    func clearSetID(fd: Int32, mode: mode_t, fileGID: gid_t, callerGID: UInt32) {
        var kept = mode & 0o7777
        let before = kept
        kept &= ~S_ISUID
        if mode & S_IXGRP != 0 || fileGID != callerHostGID(callerGID) { kept &= ~S_ISGID }
        if kept != before { try? Sys.fchmod(fd, kept) }
    }

    /// WRITE with FUSE_WRITE_KILL_SUIDGID, which the guest kernel sets for a caller
    /// without CAP_FSETID whatever was negotiated: the bits go before the data is written
    /// (as the kernel orders it), so no moment shows new contents with old privileges.
    func clearSetIDForWrite(fd: Int32, callerGID: UInt32) {
        guard let st = try? Sys.fstat(fd), st.st_mode & S_IFMT == S_IFREG,
              st.st_mode & (S_ISUID | S_ISGID) != 0 else { return }
        clearSetID(fd: fd, mode: st.st_mode, fileGID: st.st_gid, callerGID: callerGID)
    }
}
