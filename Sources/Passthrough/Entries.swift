#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix

extension PassthroughFileSystem {
    // MARK: - Lookup and forget

    /// LOOKUP: resolves `name` as one component below the parent's descriptor, never
    /// following a symlink, and takes one lookup on the node (a new node for a file the
    /// table does not hold). "." is the parent itself; ".." of the shared directory is the
    /// shared directory, and a parent the host moved out of the share is ENOENT.
    public func lookup(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) -> Entry {
        let directory = try inode(parent)
        if name.count > 0 && name.isDotOrDotDot {
            return try lookupDot(parent: parent, directory: directory, dotdot: name.count == 2)
        }
        try checkName(name)
        return try lookupChild(directory, name.cString)
    }

    /// "." is the directory itself; ".." never leaves the shared directory.
    func lookupDot(parent: NodeID, directory: InodeData, dotdot: Bool) throws(Errno) -> Entry {
        guard directory.isDirectory else { throw Errno.notDirectory }
        if !dotdot || parent == rootNodeID {
            let attributes = try stat(directory)
            let id = inodes.reference(directory.key)
            guard let id else { throw Errno.noEntry }
            return makeEntry(id, attributes)
        }
        // Walk up to make sure the parent is still inside the share (the host may have moved things).
        let up = try directory.withPathFD { (fd) throws(Errno) -> Int32 in try Sys.openat(fd, "..", CVFS_O_PATH | O_DIRECTORY) }
        let inside: Bool
        do {
            inside = try isInsideShare(up)
        } catch {
            Sys.close(up)
            throw error
        }
        guard inside else {
            Sys.close(up)
            throw Errno.noEntry
        }
        return try adopt(up)
    }

    /// True if the directory `fd` is the shared root or below it.
    func isInsideShare(_ fd: Int32) throws(Errno) -> Bool {
        func identity(_ fd: Int32) throws(Errno) -> InodeKey {
            let (st, mount) = try Sys.statxIdentity(fd, "", flags: CVFS_AT_EMPTY_PATH)
            return InodeKey(st, mountID: mount)
        }
        var cursor = try Sys.dup(fd)
        defer { Sys.close(cursor) }
        // Each level is looked at once: the parent's key becomes the next level's.
        var key = try identity(cursor)
        // Bounded: a path cannot be deeper than PATH_MAX / 2 components.
        for _ in 0..<(Int(PATH_MAX) / 2) {
            if key == root.key { return true }
            let next = try Sys.openat(cursor, "..", CVFS_O_PATH | O_DIRECTORY)
            Sys.close(cursor)
            cursor = next
            let parent = try identity(cursor)
            // The host's "/" is its own parent.
            if parent == key { return false }
            key = parent
        }
        return false
    }

    /// FORGET: drops `count` lookups; at zero the node leaves the table and its descriptor
    /// closes once no running request holds it. The root and unknown ids are left alone.
    public func forget(_ node: NodeID, count: UInt64) {
        let dropped = inodes.forget(node, count: count)
        _ = dropped // released here, outside the lock
    }

    // MARK: - Resolving one name

    /// Rejects names that are not exactly one host path component.
    func checkName(_ name: FileName) throws(Errno) {
        if name.count == 0 { throw Errno.noEntry }
        if name.count > Int(NAME_MAX) { throw Errno.nameTooLong }
        // An embedded NUL would make the system call see a different, shorter name.
        if name.bytes.contains(0) || name.containsSlash || name.isDotOrDotDot { throw Errno.invalidArgument }
    }

    func makeEntry(_ id: NodeID, _ attributes: stat) -> Entry {
        Entry(nodeID: id, generation: 0, attributes: guestAttributes(attributes), attributesTimeout: timeout, entryTimeout: timeout)
    }

    /// Opens one component below `parent` as O_PATH without following symlinks.
    func openChild(_ parent: InodeData, _ name: UnsafePointer<CChar>) throws(Errno) -> Int32 {
        try parent.withPathFD { (pfd) throws(Errno) -> Int32 in
            if useOpenat2 {
                return try Sys.openat2(pfd, name, flags: CVFS_O_PATH | O_NOFOLLOW,
                                       resolve: CVFS_RESOLVE_BENEATH | CVFS_RESOLVE_NO_MAGICLINKS)
            }
            return try Sys.openat(pfd, name, CVFS_O_PATH | O_NOFOLLOW)
        }
    }

    /// Looks up `name` in `parent` and takes one lookup count. A file the table
    /// already holds costs one statx; a new one costs statx, open and statx.
    func lookupChild(_ parent: InodeData, _ name: UnsafePointer<CChar>) throws(Errno) -> Entry {
        if let known = try lookupKnown(parent, name) { return known }
        return try lookupNew(parent, name)
    }

    /// lookupChild for a READDIRPLUS entry, whose host inode number is known: a number
    /// the table does not hold on the parent's device is a new file (open and statx), one
    /// it holds is most likely that file (statx confirms it).
    func lookupListed(_ parent: InodeData, _ name: UnsafePointer<CChar>, hostInode: UInt64) throws(Errno) -> Entry {
        let guess = InodeKey(device: parent.key.device, inode: hostInode, mountID: parent.key.mountID)
        if inodes.holdsDescriptor(guess), let known = try lookupKnown(parent, name) { return known }
        return try lookupNew(parent, name)
    }

    /// One statx of `name`: if it is a file the table holds by descriptor, takes a lookup
    /// on it. nil when the file is not in the table (or held by a handle, whose inode
    /// number may have been reused: only opening it tells). Throws when there is no such name.
    func lookupKnown(_ parent: InodeData, _ name: UnsafePointer<CChar>) throws(Errno) -> Entry? {
        let (attributes, mountID) = try parent.withPathFD { (pfd) throws(Errno) -> (stat, UInt64) in
            try Sys.statxIdentity(pfd, name, flags: CVFS_AT_SYMLINK_NOFOLLOW)
        }
        let key = InodeKey(attributes, mountID: mountID)
        guard let (id, isSubmount) = inodes.referenceHeld(key) else { return nil }
        var entry = makeEntry(id, attributes)
        if isSubmount { entry.attributeFlags = UInt32(FUSE_ATTR_SUBMOUNT) }
        return entry
    }

    /// Opens `name` below `parent` and enters it into the table (or takes a lookup on
    /// the node it turns out to be).
    func lookupNew(_ parent: InodeData, _ name: UnsafePointer<CChar>) throws(Errno) -> Entry {
        let fd = try openChild(parent, name)
        let (entry, key) = try adoptKeyed(fd)
        // A directory on another mount than its parent is the root of a submount.
        if key.mountID != parent.key.mountID && entry.attributes.st_mode & S_IFMT == S_IFDIR {
            // Remember the mount: syncfs covers it, and file handles on it can be opened.
            if let child = try? inode(entry.nodeID) {
                _ = try? child.withPathFD { (fd) throws(Errno) -> Int32 in try mountDescriptor(for: key.mountID, from: fd, fileType: S_IFDIR) }
            }
            if configuration.announceSubmounts {
                inodes.markSubmount(entry.nodeID)
                var flagged = entry
                flagged.attributeFlags = UInt32(FUSE_ATTR_SUBMOUNT)
                return flagged
            }
        }
        return entry
    }

    // MARK: - Making, linking and removing names

    /// SYMLINK: made below the parent's descriptor as the caller (fsuid, fsgid, the
    /// supplementary group the guest sent), then looked up (one lookup) and labelled.
    public func symlink(_ ctx: RequestContext, target: FileName, parent: NodeID, name: FileName, extras: CreateExtras) throws(Errno) -> Entry {
        try ensureWritable()
        try checkName(name)
        if target.bytes.contains(0) { throw Errno.invalidArgument }
        let directory = try inode(parent)
        // The descriptor is made as the daemon (a handle needs CAP_DAC_READ_SEARCH); the call runs as the caller.
        try directory.withPathFD { (fd) throws(Errno) in
            try credentials.run(ctx, supplementaryGroup: extras.supplementaryGroup) { () throws(Errno) in
                try Sys.symlinkat(target.cString, fd, name.cString)
            }
        }
        return try finishCreation(directory, name, extras: extras)
    }

    /// MKNOD: as MKDIR, with `rdev`. The backend never opens the FIFO, socket or
    /// device node it makes (`reopen` refuses them).
    public func mknod(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, rdev: UInt32, extras: CreateExtras) throws(Errno) -> Entry {
        try makeNode(ctx, parent: parent, name: name, mode: mode, extras: extras) { (fd, hostMode) throws(Errno) in
            try Sys.mknodat(fd, name.cString, hostMode, dev_t(rdev))
        }
    }

    /// MKDIR: made as the caller with the host mode (`creationMode`: the umask applied
    /// here under DONT_MASK unless the parent has a default ACL), then looked up (one
    /// lookup) and labelled. EMFILE before the daemon's descriptor reserve is touched.
    public func mkdir(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, extras: CreateExtras) throws(Errno) -> Entry {
        try makeNode(ctx, parent: parent, name: name, mode: mode, extras: extras) { (fd, hostMode) throws(Errno) in
            try Sys.mkdirat(fd, name.cString, hostMode)
        }
    }

    /// MKNOD and MKDIR: `make` runs as the caller with the parent's descriptor and
    /// the host mode; the new name is then looked up and labelled.
    func makeNode(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, extras: CreateExtras,
                  _ make: (Int32, mode_t) throws(Errno) -> Void) throws(Errno) -> Entry {
        try ensureWritable()
        try checkName(name)
        try ensureDescriptorHeadroom()
        let directory = try inode(parent)
        let hostMode = creationMode(mode, parent: directory, extras: extras)
        try directory.withPathFD { (fd) throws(Errno) in
            try credentials.run(ctx, supplementaryGroup: extras.supplementaryGroup) { () throws(Errno) in
                try make(fd, hostMode)
            }
        }
        return try finishCreation(directory, name, extras: extras)
    }

    /// UNLINK: removes `name` below the parent's descriptor. A node the guest still
    /// knows stays in the table until it is forgotten.
    public func unlink(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) {
        try ensureWritable()
        try checkName(name)
        try inode(parent).withPathFD { (fd) throws(Errno) in try Sys.unlinkat(fd, name.cString, flags: 0) }
    }

    /// RMDIR: as UNLINK, for a directory.
    public func rmdir(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) {
        try ensureWritable()
        try checkName(name)
        try inode(parent).withPathFD { (fd) throws(Errno) in try Sys.unlinkat(fd, name.cString, flags: CVFS_AT_REMOVEDIR) }
    }

    /// RENAME and RENAME2: renameat2 between the two parents' descriptors; flags other
    /// than NOREPLACE, EXCHANGE and WHITEOUT are EINVAL.
    public func rename(_ ctx: RequestContext, parent: NodeID, name: FileName, newParent: NodeID, newName: FileName, flags: UInt32) throws(Errno) {
        try ensureWritable()
        try checkName(name)
        try checkName(newName)
        let known = CVFS_RENAME_NOREPLACE | CVFS_RENAME_EXCHANGE | CVFS_RENAME_WHITEOUT
        guard flags & ~known == 0 else { throw Errno.invalidArgument }
        let from = try inode(parent)
        let to = try inode(newParent)
        try from.withPathFD { (ofd) throws(Errno) in
            try to.withPathFD { (nfd) throws(Errno) in
                // RENAME_WHITEOUT needs CAP_MKNOD, which the guest kernel already checked in the caller.
                try Sys.renameat2(ofd, name.cString, nfd, newName.cString, flags: flags)
            }
        }
    }

    /// LINK: a hard link to the node made from its own descriptor (a directory is EPERM),
    /// then looked up below the new parent: one more lookup on the same node.
    public func link(_ ctx: RequestContext, node: NodeID, newParent: NodeID, newName: FileName) throws(Errno) -> Entry {
        try ensureWritable()
        try checkName(newName)
        let data = try inode(node)
        guard !data.isDirectory else { throw Errno.permissionDenied }
        let directory = try inode(newParent)
        try data.withPathFD { (fd) throws(Errno) in
            try directory.withPathFD { (pfd) throws(Errno) in
                try Sys.linkat(fd, "", pfd, newName.cString, flags: CVFS_AT_EMPTY_PATH)
            }
        }
        return try lookupChild(directory, newName.cString)
    }

    /// READLINK: the symlink's target read from its descriptor into `buffer` (truncated
    /// to fit, as readlink(2) does); EINVAL for a node that is not a symlink.
    public func readlink(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        let data = try inode(node)
        guard data.isSymlink else { throw Errno.invalidArgument }
        return try data.withPathFD { (fd) throws(Errno) -> Int in try Sys.readlinkat(fd, "", buffer) }
    }
}
