import CVirtioFS
import Posix

// Open files and their data: OPEN, CREATE, TMPFILE, READ, WRITE, FLUSH, FSYNC,
// FALLOCATE, LSEEK, COPY_FILE_RANGE, RELEASE. READ and WRITE move the data zero
// copy: the filesystem reads into the writer's buffers and writes from the reader's.

extension Server {
    func handleOpen<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_open_in.self, &r)
        let kill = arg.open_flags & UInt32(FUSE_OPEN_KILL_SUIDGID) != 0
        let open = try filesystem.open(q.context, node: q.node, flags: arg.flags, killSuidGid: kill)
        return Self.reply(fuse_open_out(open), q.unique, &w)
    }

    /// CREATE: a new name in the request's node, opened; the reply is the entry, then the open.
    func handleCreate<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_create_in.self, &r)
        let (entry, open) = try withName(&r, q.extensionLength, rule: .create, umask: arg.umask) { (name, extras) throws(Errno) in
            try filesystem.create(q.context, parent: q.node, name: name, mode: arg.mode, flags: arg.flags, extras: extras)
        }
        return Self.reply(fuse_entry_out(entry), fuse_open_out(open), q.unique, &w)
    }

    /// TMPFILE: like CREATE without a name.
    func handleTmpfile<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_create_in.self, &r)
        // No name: skip to the extensions.
        guard r.skip(r.remaining - q.extensionLength) else { throw .invalidArgument }
        let (entry, open) = try withCreateExtras(&r, q.extensionLength, umask: arg.umask) { (extras) throws(Errno) in
            try filesystem.tmpfile(q.context, parent: q.node, mode: arg.mode, flags: arg.flags, extras: extras)
        }
        return Self.reply(fuse_entry_out(entry), fuse_open_out(open), q.unique, &w)
    }

    /// READ: the header goes first and the filesystem fills the writer behind it; the
    /// header's length is filled in once the data is there. A writer smaller than
    /// asked for gets what fits (a short read).
    func handleRead<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_read_in.self, &r)
        guard Int(arg.size) <= options.maxRead else { throw .invalidArgument }
        guard let room = w.payloadRoom else { return 0 }
        let size = UInt32(min(Int(arg.size), room))
        guard w.writeWire(fuse_out_header()) else { return 0 }
        let n = try filesystem.read(q.context, node: q.node, handle: arg.fh, offset: arg.offset, size: size, into: &w)
        guard n >= 0, n <= Int(size) else { throw .ioError }
        let total = FuseWire.outHeaderSize + n
        return Self.finishHeader(Self.header(total, 0, q.unique), &w, start: w.written - total)
    }

    /// WRITE: the payload follows the op struct and must all be there.
    func handleWrite<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_write_in.self, &r)
        guard Int(arg.size) <= options.maxWrite, Int(arg.size) <= r.remaining - q.extensionLength else {
            throw .invalidArgument
        }
        let kill = arg.write_flags & UInt32(FUSE_WRITE_KILL_SUIDGID) != 0
        let n = try filesystem.write(q.context, node: q.node, handle: arg.fh, offset: arg.offset, size: arg.size,
                                     flags: arg.flags, killSuidGid: kill, from: &r)
        guard n >= 0, n <= Int(arg.size) else { throw .ioError }
        var out = fuse_write_out()
        out.size = UInt32(n)
        return Self.reply(out, q.unique, &w)
    }

    func handleFlush<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_flush_in.self, &r)
        try filesystem.flush(q.context, node: q.node, handle: arg.fh, lockOwner: arg.lock_owner)
        return Self.replyEmpty(q.unique, &w)
    }

    func handleFsync<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_fsync_in.self, &r)
        let datasync = arg.fsync_flags & UInt32(FUSE_FSYNC_FDATASYNC) != 0
        try filesystem.fsync(q.context, node: q.node, handle: arg.fh, datasync: datasync)
        return Self.replyEmpty(q.unique, &w)
    }

    func handleFallocate<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_fallocate_in.self, &r)
        try filesystem.fallocate(q.context, node: q.node, handle: arg.fh, mode: arg.mode, offset: arg.offset, length: arg.length)
        return Self.replyEmpty(q.unique, &w)
    }

    func handleLseek<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_lseek_in.self, &r)
        var out = fuse_lseek_out()
        out.offset = try filesystem.lseek(q.context, node: q.node, handle: arg.fh, offset: arg.offset, whence: arg.whence)
        return Self.reply(out, q.unique, &w)
    }

    /// COPY_FILE_RANGE: from the request's node to the node in the op struct.
    func handleCopyFileRange<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_copy_file_range_in.self, &r)
        // The reply carries a 32-bit count: never copy more than it can say.
        let length = min(arg.len, UInt64(UInt32.max) & ~4095)
        let n = try filesystem.copyFileRange(q.context, nodeIn: q.node, handleIn: arg.fh_in, offsetIn: arg.off_in,
                                             nodeOut: arg.nodeid_out, handleOut: arg.fh_out, offsetOut: arg.off_out,
                                             length: length, flags: arg.flags)
        guard n >= 0, UInt64(n) <= length else { throw .ioError }
        var out = fuse_write_out()
        out.size = UInt32(n)
        return Self.reply(out, q.unique, &w)
    }

    /// RELEASE: always answered with success; see `logReleaseFailure`.
    func handleRelease<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_release_in.self, &r)
        let flush = arg.release_flags & UInt32(FUSE_RELEASE_FLUSH) != 0
        let flockRelease = arg.release_flags & UInt32(FUSE_RELEASE_FLOCK_UNLOCK) != 0
        do {
            try filesystem.release(q.context, node: q.node, handle: arg.fh, flags: arg.flags,
                                   lockOwner: flush || flockRelease ? arg.lock_owner : nil,
                                   flush: flush, flockRelease: flockRelease)
        } catch {
            logReleaseFailure(.release, arg.fh, error)
        }
        return Self.replyEmpty(q.unique, &w)
    }

    /// RELEASE and RELEASEDIR: the kernel has already let go of the handle, so an
    /// error has nowhere to go but the debug log.
    func logReleaseFailure(_ opcode: Opcode, _ handle: HandleID, _ error: Errno) {
        logger.debug("\(opcode.name) of handle \(handle) failed: \(errnoName(error))")
    }
}
