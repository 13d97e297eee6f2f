#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix

extension PassthroughFileSystem {
    /// READ: preadv from the handle's descriptor straight into the writer's buffers (no
    /// copy), at most `size` and what the writer can take; the bytes read, 0 at the end.
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

    /// WRITE: pwritev from the reader's buffers into the handle's descriptor. With
    /// `killSuidGid`, setuid and setgid go first; a renamed security.capability goes after.
    /// The bytes written; EFBIG when the range passes the largest file offset.
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

    /// FLUSH: only checks the handle. Locks are open-file-description locks, which go
    /// with the handle at RELEASE, not with each close(2) in the guest.
    public func flush(_ ctx: RequestContext, node: NodeID, handle: HandleID, lockOwner: UInt64) throws(Errno) {
        // Locks are open-file-description locks, released with the handle, not per close(2).
        _ = try openFile(handle)
    }

    /// FSYNC: fsync, or fdatasync with `datasync`, of the handle's descriptor.
    public func fsync(_ ctx: RequestContext, node: NodeID, handle: HandleID, datasync: Bool) throws(Errno) {
        let file = try openFile(handle)
        if datasync { try Sys.fdatasync(file.fd) } else { try Sys.fsync(file.fd) }
    }

    /// FSYNCDIR: as FSYNC, on a directory handle.
    public func fsyncdir(_ ctx: RequestContext, node: NodeID, handle: HandleID, datasync: Bool) throws(Errno) {
        try fsync(ctx, node: node, handle: handle, datasync: datasync)
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

    /// FALLOCATE: fallocate(2) on the handle's descriptor with the guest's mode bits; the
    /// host filesystem refuses the modes it lacks.
    public func fallocate(_ ctx: RequestContext, node: NodeID, handle: HandleID, mode: UInt32, offset: UInt64, length: UInt64) throws(Errno) {
        try ensureWritable()
        let file = try openFile(handle)
        guard offset <= UInt64(Int64.max), length <= UInt64(Int64.max) else { throw Errno.fileTooLarge }
        try Sys.fallocate(file.fd, mode: Int32(bitPattern: mode), offset: Int64(offset), length: Int64(length))
    }

    /// LSEEK: lseek on the handle's descriptor (SEEK_DATA and SEEK_HOLE included); the
    /// new position.
    public func lseek(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, whence: UInt32) throws(Errno) -> UInt64 {
        let file = try openFile(handle)
        guard offset <= UInt64(Int64.max) else { throw Errno.invalidArgument }
        let position = try Sys.lseek(file.fd, Int64(offset), Int32(bitPattern: whence))
        return UInt64(max(0, position))
    }

    /// COPY_FILE_RANGE: copy_file_range between two handles' descriptors, on the host;
    /// the bytes copied, which may be fewer than `length`.
    public func copyFileRange(_ ctx: RequestContext, nodeIn: NodeID, handleIn: HandleID, offsetIn: UInt64,
                              nodeOut: NodeID, handleOut: HandleID, offsetOut: UInt64, length: UInt64, flags: UInt64) throws(Errno) -> Int {
        try ensureWritable()
        let source = try openFile(handleIn)
        let target = try openFile(handleOut)
        guard offsetIn <= UInt64(Int64.max), offsetOut <= UInt64(Int64.max), flags <= UInt64(UInt32.max) else { throw Errno.invalidArgument }
        let count = Int(clamping: min(length, UInt64(Int.max)))
        return try Sys.copyFileRange(source.fd, Int64(offsetIn), target.fd, Int64(offsetOut), count, flags: UInt32(flags))
    }
}
