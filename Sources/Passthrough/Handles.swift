#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix
import Synchronization

/// An open file or directory. A directory handle holds no listing buffer: READDIR
/// seeks to the guest's offset and reads into its thread's buffer, so a guest that
/// opens many directories costs one descriptor each, nothing more.
final class OpenFile: Sendable {
    let fd: Int32
    let inode: InodeData
    /// Serialises seek+getdents on a directory handle, and holds where the host
    /// descriptor stands (the d_off the next getdents64 starts from; `unknownPosition`
    /// when it must seek). A READDIR that continues from there needs no lseek, which on
    /// some filesystems (ext4 hashed directories) throws away their listing state.
    let position = Mutex<UInt64>(0)
    static let unknownPosition = UInt64.max

    init(fd: Int32, inode: InodeData) {
        self.fd = fd
        self.inode = inode
    }

    deinit {
        Sys.close(fd)
    }
}

struct HandleTable {
    var files: [HandleID: OpenFile] = [:]
    var nextID: HandleID = 1

    mutating func insert(_ file: OpenFile) -> HandleID {
        let id = nextID
        nextID &+= 1
        files[id] = file
        return id
    }
}

extension PassthroughFileSystem {
    func openFile(_ id: HandleID) throws(Errno) -> OpenFile {
        guard let file = handles.withLock({ $0.files[id] }) else { throw Errno.badFileDescriptor }
        return file
    }

    func registerHandle(fd: Int32, inode: InodeData) -> HandleID {
        let file = OpenFile(fd: fd, inode: inode)
        return handles.withLock { $0.insert(file) }
    }

    /// OPEN: reopens the node through /proc/self/fd with the host open flags
    /// (`hostOpenFlags`); a symlink is ELOOP and a special file EPERM, so neither is ever
    /// followed nor opened. Writing or O_TRUNC on a read-only share is EROFS, and EMFILE
    /// comes before the daemon's descriptor reserve is touched. Returns a handle.
    public func open(_ ctx: RequestContext, node: NodeID, flags: UInt32, killSuidGid: Bool) throws(Errno) -> OpenReply {
        let data = try inode(node)
        let hostFlags = hostOpenFlags(flags)
        if hostFlags & O_ACCMODE != O_RDONLY || hostFlags & O_TRUNC != 0 { try ensureWritable() }
        try ensureDescriptorHeadroom()
        let fd = try reopen(data, flags: hostFlags)
        if hostFlags & O_TRUNC != 0 { clearSetIDForTruncate(fd: fd, ctx, flagged: killSuidGid) }
        let handle = registerHandle(fd: fd, inode: data)
        return OpenReply(handle: handle, flags: openReplyFlags(directory: data.isDirectory))
    }

    /// RELEASE: drops the handle (its descriptor, and with it its OFD locks, goes once no
    /// request uses it), cancels the lock waits parked on it and, if asked, unlocks its flock.
    public func release(_ ctx: RequestContext, node: NodeID, handle: HandleID, flags: UInt32, lockOwner: UInt64?, flush: Bool, flockRelease: Bool) throws(Errno) {
        // Closing the last descriptor of the open file description drops its OFD and flock locks.
        let file = handles.withLock { $0.files.removeValue(forKey: handle) }
        // Nobody waits for the answers of lock requests on a closed handle.
        lockWaits.cancel(handle: handle)
        if flockRelease, let file { try? Sys.flock(file.fd, LOCK_UN) }
    }

    /// The open flags the host gets for the guest's `flags`.
    func hostOpenFlags(_ guestFlags: UInt32) -> Int32 {
        var flags = Int32(bitPattern: guestFlags)
        if configuration.writeback {
            // The kernel may read to fill partial pages, and handles O_APPEND itself.
            if flags & O_ACCMODE == O_WRONLY { flags = (flags & ~O_ACCMODE) | O_RDWR }
            flags &= ~O_APPEND
        }
        if !configuration.allowDirectIO { flags &= ~CVFS_O_DIRECT }
        if !configuration.preserveNoatime { flags &= ~CVFS_O_NOATIME }
        // OPEN never creates: the same flags a reopen drops.
        return flags & ~Self.flagsNeverReopened
    }

    func openReplyFlags(directory: Bool) -> OpenReplyFlags {
        switch configuration.cache {
        case .never, .metadata: return directory ? [] : .directIO
        case .auto: return []
        case .always: return directory ? [.cacheDirectory, .keepCache] : .keepCache
        }
    }
}
