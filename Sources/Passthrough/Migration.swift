#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Options
import Posix

// The inode store is reached only through its few migration methods (Inodes.swift),
// so a change to its internals touches migration in one place.

extension HandleTable {
    mutating func restore(id: HandleID, file: OpenFile) {
        files[id] = file
        if nextID <= id { nextID = id &+ 1 }
    }
}

extension PassthroughFileSystem {
    // MARK: - Source side

    /// The state of every inode and open handle the guest holds, located as
    /// `configuration.migration.mode` says. Called with every queue stopped.
    /// A file that cannot be located is recorded as lost (with why); the
    /// destination applies `--migration-on-error` to it.
    public func exportMigrationState() -> MigrationState {
        let options = configuration.migration
        var state = MigrationState()
        state.mode = options.mode
        state.filesystemFlags = negotiated.load(ordering: .relaxed)
        let (nodes, nextNode) = inodes.migrationSnapshot()
        let (files, nextHandle) = handles.withLock { ($0.files.map { ($0.key, $0.value) }, $0.nextID) }
        state.nextNodeID = nextNode
        state.nextHandleID = nextHandle
        let rootPrefix = hostPath(of: root)
        var idOf: [ObjectIdentifier: NodeID] = [:]
        for (id, node) in nodes.sorted(by: { $0.0 < $1.0 }) {
            idOf[ObjectIdentifier(node.data)] = id
            let location: MigrationState.Location
            if id == rootNodeID {
                location = .path([])
            } else if options.mode == .fileHandles {
                location = locateByHandle(node.data)
            } else {
                location = locateByPath(node.data, rootPrefix: rootPrefix, confirm: options.confirmPaths)
            }
            if case .lost(let why) = location {
                logger.warning("migration: inode \(id) cannot be located: \(String(decoding: why, as: UTF8.self))")
            }
            state.inodes.append(MigrationState.Inode(id: id, lookups: node.lookups, fileType: UInt32(node.data.fileType),
                                                     inodeNumber: node.data.key.inode, location: location))
        }
        for (id, file) in files.sorted(by: { $0.0 < $1.0 }) {
            guard let node = idOf[ObjectIdentifier(file.inode)] else {
                logger.warning("migration: handle \(id) belongs to a forgotten inode; not migrated")
                continue
            }
            let flags = (try? Sys.fileStatusFlags(file.fd)) ?? O_RDONLY
            state.handles.append(MigrationState.Handle(id: id, node: node, flags: UInt32(bitPattern: flags)))
        }
        return state
    }

    /// Where the process sees `inode`, from /proc/self/fd; nil when unknown.
    func hostPath(of inode: InodeData) -> [UInt8]? {
        try? inode.withPathFD { (fd) throws(Errno) -> [UInt8]? in
            try withProcName(fd) { (name) throws(Errno) -> [UInt8]? in
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(PATH_MAX) + 1, alignment: 1)
                defer { buffer.deallocate() }
                let n = try Sys.readlinkat(procSelfFD, name, buffer)
                guard n > 0, n <= Int(PATH_MAX) else { return nil }
                return Array(buffer[0..<n])
            }
        }
    }

    func locateByPath(_ data: InodeData, rootPrefix: [UInt8]?, confirm: Bool) -> MigrationState.Location {
        guard let rootPrefix else { return .lost(Array("the shared directory's own path is unknown".utf8)) }
        guard let full = hostPath(of: data) else { return .lost(Array("no path (the file is gone)".utf8)) }
        if full.count > 10 && full.suffix(10).elementsEqual(" (deleted)".utf8) {
            return .lost(Array("deleted on the host".utf8))
        }
        // "/" when the sandbox made the shared directory the root, else its host path.
        let prefix = rootPrefix == [UInt8(ascii: "/")] ? rootPrefix : rootPrefix + [UInt8(ascii: "/")]
        guard full.count > prefix.count, full.starts(with: prefix) else {
            return .lost(Array("outside the shared directory now".utf8))
        }
        let relative = Array(full[prefix.count...])
        if confirm {
            guard let fd = try? openRelative(relative) else {
                return .lost(Array("its path no longer opens".utf8))
            }
            defer { Sys.close(fd) }
            guard let identity = try? Sys.statxIdentity(fd, "", flags: CVFS_AT_EMPTY_PATH | CVFS_AT_SYMLINK_NOFOLLOW),
                  InodeKey(identity.0, mountID: identity.1) == data.key else {
                return .lost(Array("its path leads to another file now".utf8))
            }
        }
        return .path(relative)
    }

    func locateByHandle(_ data: InodeData) -> MigrationState.Location {
        if data.isHandle { return .fileHandle(data.handle) }
        do {
            return .fileHandle(try fileHandle(data.fd))
        } catch {
            return .lost(Array("no file handle: \(error)".utf8))
        }
    }

    // MARK: - Destination side

    /// Restores `state` into this (fresh) filesystem: the FUSE session's flags,
    /// every inode under its old id and lookup count, every open handle. With
    /// `--migration-on-error=abort` the first file that cannot be restored fails
    /// the whole load and nothing is changed.
    public func importMigrationState(_ state: MigrationState) throws(MigrationFormatError) {
        let options = configuration.migration
        guard inodes.isPristine, handles.withLock({ $0.files.isEmpty }) else {
            throw .bad("this daemon already served the guest; a state can only be loaded into a fresh one")
        }
        var restored: [(NodeID, InodeData, UInt64, Bool)] = []
        var byID: [UInt64: InodeData] = [:]
        var rootLookups: UInt64 = 1
        var failures = 0
        for inode in state.inodes {
            if inode.id == rootNodeID {
                rootLookups = max(inode.lookups, 1)
                byID[inode.id] = root
                continue
            }
            let data: InodeData
            do throws(MigrationFormatError) {
                data = try restoreInode(inode, options: options)
                restored.append((inode.id, data, inode.lookups, true))
            } catch {
                guard options.onError == .guestError else { throw error }
                failures += 1
                logger.warning("migration: inode \(inode.id) answers errors from now on: \(error)")
                // No descriptor and no handle: every operation on it fails with EBADF.
                data = InodeData(key: InodeKey(device: .max, inode: inode.id, mountID: .max),
                                 fileType: mode_t(inode.fileType), handle: [], mountFD: -1)
                restored.append((inode.id, data, inode.lookups, false))
            }
            byID[inode.id] = data
        }
        var files: [(HandleID, OpenFile)] = []
        for handle in state.handles {
            guard let data = byID[handle.node] else { continue }
            do throws(MigrationFormatError) {
                files.append((handle.id, try reopenHandle(handle, data)))
            } catch {
                guard options.onError == .guestError else { throw error }
                failures += 1
                logger.warning("migration: handle \(handle.id) is gone (the guest gets EBADF): \(error)")
            }
        }
        negotiated.store(state.filesystemFlags, ordering: .relaxed)
        inodes.restoreRootLookups(rootLookups)
        for (id, data, lookups, indexed) in restored {
            inodes.restore(id: id, data: data, lookups: lookups, indexed: indexed)
        }
        inodes.continueAfter(state.nextNodeID)
        handles.withLock { table in
            for (id, file) in files { table.restore(id: id, file: file) }
            if table.nextID < state.nextHandleID { table.nextID = state.nextHandleID }
        }
        logger.info("migration: restored \(restored.count + 1) inodes and \(files.count) open handles (\(state.mode.rawValue))\(failures > 0 ? ", \(failures) failed" : "")")
    }

    /// Opens one migrated inode and represents it as this daemon's configuration says.
    func restoreInode(_ inode: MigrationState.Inode, options: MigrationOptions) throws(MigrationFormatError) -> InodeData {
        let fd: Int32
        switch inode.location {
        case .lost(let why):
            throw .bad("inode \(inode.id) was not located on the source: \(String(decoding: why, as: UTF8.self))")
        case .path(let path):
            do { fd = try openRelative(path) } catch {
                throw .bad("inode \(inode.id): \(String(decoding: path, as: UTF8.self)): \(error)")
            }
        case .fileHandle(let handle):
            guard let mountFD = inodes.mountFDs.withLock({ $0[root.key.mountID] }) else {
                throw .bad("inode \(inode.id): no descriptor on the shared directory's mount to open handles with")
            }
            var copy = handle
            do {
                fd = try copy.withUnsafeMutableBytes { (raw) throws(Errno) -> Int32 in
                    guard let base = raw.baseAddress else { throw Errno.stale }
                    return try Sys.openByHandleAt(mountFD, base, flags: CVFS_O_PATH | O_NOFOLLOW)
                }
            } catch {
                throw .bad("inode \(inode.id): its file handle does not open: \(error)")
            }
        }
        let identity: (stat, UInt64)
        do {
            identity = try Sys.statxIdentity(fd, "", flags: CVFS_AT_EMPTY_PATH | CVFS_AT_SYMLINK_NOFOLLOW)
        } catch {
            Sys.close(fd)
            throw .bad("inode \(inode.id): \(error)")
        }
        let fileType = identity.0.st_mode & S_IFMT
        guard UInt32(fileType) == inode.fileType else {
            Sys.close(fd)
            throw .bad("inode \(inode.id): a file of another type is there now")
        }
        if case .fileHandle = inode.location {
            if options.verifyHandles, UInt64(identity.0.st_ino) != inode.inodeNumber {
                Sys.close(fd)
                throw .bad("inode \(inode.id): its handle opens inode \(identity.0.st_ino), the source had \(inode.inodeNumber)")
            }
            // open_by_handle_at opens anything on the filesystem, also outside the shared
            // directory. A directory is always connected, so its path shows where it is.
            if fileType == S_IFDIR && !isBelowRoot(fd) {
                Sys.close(fd)
                throw .bad("inode \(inode.id): its handle opens a directory outside the shared directory")
            }
        }
        do {
            return try represent(fd, key: InodeKey(identity.0, mountID: identity.1), fileType: fileType)
        } catch {
            Sys.close(fd)
            throw .bad("inode \(inode.id): \(error)")
        }
    }

    /// Whether the directory `fd` lies below (or is) the shared directory: its ".."
    /// chain reaches the root before the top of the filesystem. (A path from
    /// /proc/self/fd cannot tell: with the namespace sandbox every path starts at "/".)
    func isBelowRoot(_ fd: Int32) -> Bool {
        func key(_ fd: Int32) -> InodeKey? {
            guard let identity = try? Sys.statxIdentity(fd, "", flags: CVFS_AT_EMPTY_PATH | CVFS_AT_SYMLINK_NOFOLLOW) else { return nil }
            return InodeKey(identity.0, mountID: identity.1)
        }
        guard var current = try? Sys.openat(fd, ".", CVFS_O_PATH | O_DIRECTORY) else { return false }
        defer { Sys.close(current) }
        // Deeper than PATH_MAX / 2 components is not a path anyone can use.
        for _ in 0..<(Int(PATH_MAX) / 2) {
            guard let here = key(current) else { return false }
            if here == root.key { return true }
            guard let parent = try? Sys.openat(current, "..", CVFS_O_PATH | O_DIRECTORY) else { return false }
            guard let up = key(parent), up != here else {
                Sys.close(parent)
                return false
            }
            Sys.close(current)
            current = parent
        }
        return false
    }

    /// Opens `path` (checked by the codec: relative, no "." or "..") below the shared
    /// directory one component at a time, never following a symlink.
    func openRelative(_ path: [UInt8]) throws(Errno) -> Int32 {
        var current = try Sys.openat(root.fd, ".", CVFS_O_PATH | O_DIRECTORY)
        let components = path.split(separator: UInt8(ascii: "/"))
        for (i, component) in components.enumerated() {
            let last = i == components.count - 1
            let next: Int32
            do {
                next = try (Array(component) + [0]).withUnsafeBufferPointer { (bytes) throws(Errno) -> Int32 in
                    try bytes.withMemoryRebound(to: CChar.self) { (name) throws(Errno) -> Int32 in
                        guard let base = name.baseAddress else { throw Errno.invalidArgument }
                        return try Sys.openat(current, base, CVFS_O_PATH | O_NOFOLLOW | (last ? 0 : O_DIRECTORY))
                    }
                }
            } catch {
                Sys.close(current)
                throw error
            }
            Sys.close(current)
            current = next
        }
        return current
    }

    /// Opens a migrated handle's file again with its flags (never creating or truncating).
    func reopenHandle(_ handle: MigrationState.Handle, _ data: InodeData) throws(MigrationFormatError) -> OpenFile {
        let flags = data.isDirectory ? O_RDONLY | O_DIRECTORY
            : Int32(bitPattern: handle.flags) & ~(O_TRUNC | O_CREAT | O_EXCL | O_DIRECTORY)
        do {
            return OpenFile(fd: try reopen(data, flags: flags), inode: data)
        } catch {
            throw .bad("handle \(handle.id) of inode: \(error)")
        }
    }
}
