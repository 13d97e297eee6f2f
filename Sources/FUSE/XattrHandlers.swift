import CVirtioFS
import Posix

// Extended attributes: SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR. Names are xattr
// names (any bytes but NUL; too long or empty is ERANGE); values are bytes of at
// most XATTR_SIZE_MAX.

extension Server {
    /// SETXATTR: the op struct, then the name and its NUL, then exactly `size` value bytes.
    func handleSetxattr<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        // Without SETXATTR_EXT the kernel sends the 8-byte compat struct.
        let extended = negotiatedFlags.contains(.setxattrExt)
        let fixed = extended ? MemoryLayout<fuse_setxattr_in>.size : Int(FUSE_COMPAT_SETXATTR_IN_SIZE)
        let arg = try Self.readPrefix(fuse_setxattr_in.self, size: fixed, &r)
        guard Int(arg.size) <= FuseWire.maxXattrSize else { throw .tooBig }
        let region = r.remaining - q.extensionLength
        guard region >= 0 else { throw .invalidArgument }
        // name + NUL + value, the name at most 255 bytes.
        guard region <= FuseWire.maxNameLength + 1 + Int(arg.size) else { throw .range }
        try withUnsafeTemporaryAllocation(byteCount: max(region, 1), alignment: 8) { (buffer) throws(Errno) in
            let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<region])
            guard r.read(into: bytes) else { throw .invalidArgument }
            guard let nul = bytes.firstIndex(of: 0) else { throw .invalidArgument }
            guard nul > 0, nul <= FuseWire.maxNameLength else { throw .range }
            guard region - (nul + 1) == Int(arg.size) else { throw .invalidArgument }
            guard let base = bytes.baseAddress else { throw .invalidArgument }
            let name = FileName(cString: base.assumingMemoryBound(to: CChar.self), count: nul)
            let value = UnsafeRawBufferPointer(rebasing: bytes[(nul + 1)...])
            try filesystem.setxattr(q.context, node: q.node, name: name, value: value, flags: arg.flags,
                                    extFlags: extended ? arg.setxattr_flags : 0)
        }
        return Self.replyEmpty(q.unique, &w)
    }

    func handleGetxattr<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_getxattr_in.self, &r)
        return try withName(&r, q.extensionLength, rule: .xattr) { (name, _) throws(Errno) -> Int in
            try Self.replyXattr(size: arg.size, q.unique, &w) { (buffer) throws(Errno) in
                try filesystem.getxattr(q.context, node: q.node, name: name, into: buffer)
            }
        }
    }

    func handleListxattr<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_getxattr_in.self, &r)
        return try Self.replyXattr(size: arg.size, q.unique, &w) { (buffer) throws(Errno) in
            try filesystem.listxattr(q.context, node: q.node, into: buffer)
        }
    }

    func handleRemovexattr<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        try withName(&r, q.extensionLength, rule: .xattr) { (name, _) throws(Errno) in
            try filesystem.removexattr(q.context, node: q.node, name: name)
        }
        return Self.replyEmpty(q.unique, &w)
    }

    /// GETXATTR / LISTXATTR: a size query (size 0) gets `fuse_getxattr_out`, otherwise
    /// the bytes, read into a stack buffer of at most XATTR_SIZE_MAX.
    static func replyXattr<W: FuseWriter>(
        size: UInt32, _ unique: UInt64, _ w: inout W, _ fill: (UnsafeMutableRawBufferPointer?) throws(Errno) -> Int
    ) throws(Errno) -> Int {
        if size == 0 {
            let n = try fill(nil)
            guard n >= 0 else { throw .ioError }
            // A value larger than the protocol can carry would only fail later.
            guard n <= FuseWire.maxXattrSize else { throw .tooBig }
            var out = fuse_getxattr_out()
            out.size = UInt32(n)
            return reply(out, unique, &w)
        }
        guard let room = w.payloadRoom else { return 0 }
        let capacity = min(Int(size), FuseWire.maxXattrSize, room)
        return try withUnsafeTemporaryAllocation(byteCount: max(capacity, 1), alignment: 8) {
            (buffer) throws(Errno) -> Int in
            let value = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<capacity])
            let n = try fill(value)
            guard n >= 0, n <= capacity else { throw .ioError }
            return replyBytes(UnsafeRawBufferPointer(rebasing: value[0..<n]), unique, &w)
        }
    }
}
