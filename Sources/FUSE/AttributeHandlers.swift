#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

// A node's attributes and the filesystem as a whole: GETATTR, SETATTR, ACCESS,
// STATFS, SYNCFS.

extension Server {
    /// GETATTR: with FUSE_GETATTR_FH the kernel names the open handle it asks through.
    func handleGetattr<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_getattr_in.self, &r)
        let handle: HandleID? = arg.getattr_flags & UInt32(FUSE_GETATTR_FH) != 0 ? arg.fh : nil
        return Self.reply(fuse_attr_out(try filesystem.getattr(q.context, node: q.node, handle: handle)), q.unique, &w)
    }

    func handleSetattr<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_setattr_in.self, &r)
        return Self.reply(fuse_attr_out(try filesystem.setattr(q.context, node: q.node, SetAttributes(arg))), q.unique, &w)
    }

    func handleAccess<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_access_in.self, &r)
        try filesystem.access(q.context, node: q.node, mask: arg.mask)
        return Self.replyEmpty(q.unique, &w)
    }

    /// STATFS: no op struct.
    func handleStatfs<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        var out = fuse_statfs_out()
        out.st = fuse_kstatfs(try filesystem.statfs(q.context, node: q.node))
        return Self.reply(out, q.unique, &w)
    }

    func handleSyncfs<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        _ = try Self.read(fuse_syncfs_in.self, &r)
        try filesystem.syncfs(q.context, node: q.node)
        return Self.replyEmpty(q.unique, &w)
    }
}
