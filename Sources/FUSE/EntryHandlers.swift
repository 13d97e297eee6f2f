import CVirtioFS
import Posix

// Names in directories and the lookup counts they carry: LOOKUP, FORGET and
// BATCH_FORGET, the creating ops (MKNOD, MKDIR, SYMLINK, LINK), READLINK, and the
// ones that remove or move a name (UNLINK, RMDIR, RENAME, RENAME2). The request's
// node is the parent directory, except for READLINK and LINK's source.

extension Server {
    func handleLookup<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let entry = try withName(&r, q.extensionLength, rule: .lookup) { (name, _) throws(Errno) in
            try filesystem.lookup(q.context, parent: q.node, name: name)
        }
        return Self.reply(fuse_entry_out(entry), q.unique, &w)
    }

    /// FORGET: never answered; a short one is simply ignored.
    func handleForget<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        if let arg = r.readWire(fuse_forget_in.self) { filesystem.forget(q.node, count: arg.nlookup) }
        return 0
    }

    /// BATCH_FORGET: never answered; a count larger than the request holds is ignored whole.
    func handleBatchForget<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        guard let arg = r.readWire(fuse_batch_forget_in.self) else { return 0 }
        let (bytes, overflow) = Int(arg.count).multipliedReportingOverflow(by: MemoryLayout<fuse_forget_one>.size)
        guard !overflow, bytes <= r.remaining else { return 0 }
        for _ in 0..<Int(arg.count) {
            guard let one = r.readWire(fuse_forget_one.self) else { break }
            filesystem.forget(one.nodeid, count: one.nlookup)
        }
        return 0
    }

    func handleMknod<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_mknod_in.self, &r)
        let entry = try withName(&r, q.extensionLength, rule: .create, umask: arg.umask) { (name, extras) throws(Errno) in
            try filesystem.mknod(q.context, parent: q.node, name: name, mode: arg.mode, rdev: arg.rdev, extras: extras)
        }
        return Self.reply(fuse_entry_out(entry), q.unique, &w)
    }

    func handleMkdir<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_mkdir_in.self, &r)
        let entry = try withName(&r, q.extensionLength, rule: .create, umask: arg.umask) { (name, extras) throws(Errno) in
            try filesystem.mkdir(q.context, parent: q.node, name: name, mode: arg.mode, extras: extras)
        }
        return Self.reply(fuse_entry_out(entry), q.unique, &w)
    }

    /// SYMLINK: no op struct; the new name, then the target. A symlink has no mode to
    /// mask: umask 0 only asks for the request extensions (security context, group).
    func handleSymlink<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let entry = try withNames(&r, q.extensionLength, firstRule: .create, secondRule: .symlinkTarget, umask: 0) {
            (name, target, extras) throws(Errno) in
            try filesystem.symlink(q.context, target: target, parent: q.node, name: name, extras: extras)
        }
        return Self.reply(fuse_entry_out(entry), q.unique, &w)
    }

    /// READLINK: the target into a stack buffer of PATH_MAX, then the reply, cut to
    /// what the writer holds.
    func handleReadlink<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        guard let room = w.payloadRoom else { return 0 }
        let capacity = min(FuseWire.maxSymlinkTarget + 1, room)
        return try withUnsafeTemporaryAllocation(byteCount: FuseWire.maxSymlinkTarget + 1, alignment: 8) {
            (buffer) throws(Errno) -> Int in
            let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<capacity])
            let n = try filesystem.readlink(q.context, node: q.node, into: target)
            guard n >= 0, n <= capacity else { throw .ioError }
            return Self.replyBytes(UnsafeRawBufferPointer(rebasing: target[0..<n]), q.unique, &w)
        }
    }

    /// LINK: the request's node is the new parent; the linked node is in the op struct.
    func handleLink<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_link_in.self, &r)
        let entry = try withName(&r, q.extensionLength, rule: .create) { (name, _) throws(Errno) in
            try filesystem.link(q.context, node: arg.oldnodeid, newParent: q.node, newName: name)
        }
        return Self.reply(fuse_entry_out(entry), q.unique, &w)
    }

    func handleUnlink<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        try withName(&r, q.extensionLength, rule: .remove) { (name, _) throws(Errno) in
            try filesystem.unlink(q.context, parent: q.node, name: name)
        }
        return Self.replyEmpty(q.unique, &w)
    }

    func handleRmdir<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        try withName(&r, q.extensionLength, rule: .remove) { (name, _) throws(Errno) in
            try filesystem.rmdir(q.context, parent: q.node, name: name)
        }
        return Self.replyEmpty(q.unique, &w)
    }

    /// RENAME: the old layout, without flags.
    func handleRename<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_rename_in.self, &r)
        return try rename(q, newParent: arg.newdir, flags: 0, &r, &w)
    }

    /// RENAME2: with RENAME_NOREPLACE / RENAME_EXCHANGE / RENAME_WHITEOUT flags.
    func handleRename2<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_rename2_in.self, &r)
        return try rename(q, newParent: arg.newdir, flags: arg.flags, &r, &w)
    }

    /// Both renames after their op struct: the old name, then the new one.
    private func rename<R: FuseReader, W: FuseWriter>(
        _ q: RequestHead, newParent: NodeID, flags: UInt32, _ r: inout R, _ w: inout W
    ) throws(Errno) -> Int {
        try withNames(&r, q.extensionLength, firstRule: .remove, secondRule: .remove) { (name, newName, _) throws(Errno) in
            try filesystem.rename(q.context, parent: q.node, name: name, newParent: newParent, newName: newName, flags: flags)
        }
        return Self.replyEmpty(q.unique, &w)
    }
}
