import CVirtioFS
import Posix

// Open directories: OPENDIR, READDIR, READDIRPLUS, FSYNCDIR, RELEASEDIR.

extension Server {
    func handleOpendir<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_open_in.self, &r)
        return Self.reply(fuse_open_out(try filesystem.opendir(q.context, node: q.node, flags: arg.flags)), q.unique, &w)
    }

    func handleReaddir<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        try readdir(q, plus: false, &r, &w)
    }

    /// READDIRPLUS: each record carries its entry too, and a lookup count with it.
    func handleReaddirplus<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        try readdir(q, plus: true, &r, &w)
    }

    /// Records are packed into a stack buffer of the size asked for (at most max_write,
    /// and what the writer holds), then copied out whole as the reply.
    private func readdir<R: FuseReader, W: FuseWriter>(_ q: RequestHead, plus: Bool, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_read_in.self, &r)
        guard let room = w.payloadRoom else { return 0 }
        let size = min(Int(arg.size), options.maxWrite, room)
        return try withUnsafeTemporaryAllocation(byteCount: max(size, 1), alignment: 8) {
            (buffer) throws(Errno) -> Int in
            var packer = DirentPacker(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<size]), plus: plus)
            try filesystem.readdir(q.context, node: q.node, handle: arg.fh, offset: arg.offset, plus: plus, into: &packer)
            return Self.replyBytes(UnsafeRawBufferPointer(rebasing: buffer[0..<packer.used]), q.unique, &w)
        }
    }

    func handleFsyncdir<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_fsync_in.self, &r)
        let datasync = arg.fsync_flags & UInt32(FUSE_FSYNC_FDATASYNC) != 0
        try filesystem.fsyncdir(q.context, node: q.node, handle: arg.fh, datasync: datasync)
        return Self.replyEmpty(q.unique, &w)
    }

    /// RELEASEDIR: always answered with success, like RELEASE.
    func handleReleasedir<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_release_in.self, &r)
        do {
            try filesystem.releasedir(q.context, node: q.node, handle: arg.fh, flags: arg.flags)
        } catch {
            logReleaseFailure(.releasedir, arg.fh, error)
        }
        return Self.replyEmpty(q.unique, &w)
    }
}
