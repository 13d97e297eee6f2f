import CVirtioFS
import Posix

// Reading a request: the fixed op struct, the NUL-terminated names after it and the
// request extensions at its end. Every length comes from the guest and is checked
// against what the reader holds before anything is copied; names are copied into a
// per-call stack buffer so the filesystem gets NUL-terminated bytes that the guest
// cannot change under it.

/// What a handler needs of the request header, after `dispatch` has checked it.
struct RequestHead {
    /// The caller's ids and pid, and the request's unique id.
    let context: RequestContext
    /// The node the request is about (the parent directory for operations on names).
    let node: NodeID
    /// Bytes of request extensions at the end of the request; within what the reader holds.
    let extensionLength: Int

    var unique: UInt64 { context.unique }

    init(_ h: fuse_in_header, extensionLength: Int) {
        context = RequestContext(unique: h.unique, uid: h.uid, gid: h.gid, pid: h.pid)
        node = h.nodeid
        self.extensionLength = extensionLength
    }
}

extension Server {
    // MARK: fixed structs

    /// The op struct that follows the header; EINVAL if the request is too short for it.
    @inline(__always)
    static func read<T, R: FuseReader>(_ type: T.Type, _ r: inout R) throws(Errno) -> T {
        guard let value = r.readWire(T.self) else { throw .invalidArgument }
        return value
    }

    /// A struct of which only the first `size` bytes are on the wire (INIT before 7.36,
    /// SETXATTR without SETXATTR_EXT send a shorter, older layout); the rest is zero.
    static func readPrefix<T, R: FuseReader>(_ type: T.Type, size: Int, _ r: inout R) throws(Errno) -> T {
        assert(_isPOD(T.self), "wire structs are plain data")
        let length = min(size, MemoryLayout<T>.size)
        return try withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { (slot) throws(Errno) -> T in
            let bytes = UnsafeMutableRawBufferPointer(slot)
            bytes.initializeMemory(as: UInt8.self, repeating: 0)
            guard r.read(into: UnsafeMutableRawBufferPointer(rebasing: bytes[0..<length])) else { throw .invalidArgument }
            return slot[0]
        }
    }

    // MARK: names

    /// How a decoded name is checked before the filesystem sees it.
    enum NameRule {
        /// LOOKUP: "." and ".." reach the filesystem (the kernel asks for them when exporting over NFS).
        case lookup
        /// Making a new name: "." and ".." already exist.
        case create
        /// Unlink, rmdir, rename: "." and ".." are not names that can be removed.
        case remove
        /// An xattr name: not a path component; too long or empty is ERANGE, as setxattr(2) says.
        case xattr
        /// A symlink target: any non-empty bytes up to PATH_MAX.
        case symlinkTarget

        var maxLength: Int { self == .symlinkTarget ? FuseWire.maxSymlinkTarget : FuseWire.maxNameLength }
        var tooLong: Errno { self == .xattr ? .range : .nameTooLong }

        func check(_ name: FileName) throws(Errno) {
            switch self {
            case .xattr:
                guard name.count > 0 else { throw .range }
            case .symlinkTarget:
                guard name.count > 0 else { throw .noEntry }
            case .lookup, .create, .remove:
                guard name.count > 0, !name.containsSlash else { throw .invalidArgument }
                if name.isDotOrDotDot {
                    if self == .create { throw .exists }
                    if self == .remove { throw .invalidArgument }
                }
            }
        }
    }

    /// Copies the one NUL-terminated name that sits between the op struct and the
    /// extensions into a stack buffer and calls `body` with it.
    /// With `umask` set (creating ops), the request extensions are decoded too.
    func withName<R: FuseReader, T>(
        _ r: inout R, _ extensionLength: Int, rule: NameRule, umask: UInt32? = nil,
        _ body: (FileName, CreateExtras) throws(Errno) -> T
    ) throws(Errno) -> T {
        let region = r.remaining - extensionLength
        guard region > 0 else { throw .invalidArgument }
        guard region <= rule.maxLength + 1 else { throw rule.tooLong }
        return try withUnsafeTemporaryAllocation(byteCount: rule.maxLength + 1, alignment: 8) {
            (buffer) throws(Errno) -> T in
            let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<region])
            guard r.read(into: bytes) else { throw .invalidArgument }
            let name = try Self.cutName(bytes, from: 0, to: region, rule: rule)
            guard let umask else { return try body(name, CreateExtras()) }
            return try withCreateExtras(&r, extensionLength, umask: umask) { (extras) throws(Errno) in
                try body(name, extras)
            }
        }
    }

    /// Two NUL-terminated names back to back (RENAME's old and new, SYMLINK's name and target).
    func withNames<R: FuseReader, T>(
        _ r: inout R, _ extensionLength: Int, firstRule: NameRule, secondRule: NameRule, umask: UInt32? = nil,
        _ body: (FileName, FileName, CreateExtras) throws(Errno) -> T
    ) throws(Errno) -> T {
        let region = r.remaining - extensionLength
        let capacity = firstRule.maxLength + 1 + secondRule.maxLength + 1
        guard region > 0 else { throw .invalidArgument }
        guard region <= capacity else { throw .nameTooLong }
        return try withUnsafeTemporaryAllocation(byteCount: capacity, alignment: 8) {
            (buffer) throws(Errno) -> T in
            let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<region])
            guard r.read(into: bytes) else { throw .invalidArgument }
            guard let nul = bytes.firstIndex(of: 0) else { throw .invalidArgument }
            let first = try Self.cutName(bytes, from: 0, to: nul + 1, rule: firstRule)
            let second = try Self.cutName(bytes, from: nul + 1, to: region, rule: secondRule)
            guard let umask else { return try body(first, second, CreateExtras()) }
            return try withCreateExtras(&r, extensionLength, umask: umask) { (extras) throws(Errno) in
                try body(first, second, extras)
            }
        }
    }

    /// The name in `bytes[from..<to]`, which must end with its only NUL.
    static func cutName(_ bytes: UnsafeMutableRawBufferPointer, from: Int, to: Int, rule: NameRule) throws(Errno) -> FileName {
        guard from < to, let base = bytes.baseAddress else { throw .invalidArgument }
        let slice = UnsafeRawBufferPointer(start: base + from, count: to - from)
        guard let nul = slice.firstIndex(of: 0), nul == slice.count - 1 else { throw .invalidArgument }
        guard nul <= rule.maxLength else { throw rule.tooLong }
        let name = FileName(cString: (base + from).assumingMemoryBound(to: CChar.self), count: nul)
        try rule.check(name)
        return name
    }

    // MARK: request extensions

    /// Reads the request extensions that follow a creating op's names and calls
    /// `body` with the umask and whatever security context and group they carry.
    func withCreateExtras<R: FuseReader, T>(
        _ r: inout R, _ extensionLength: Int, umask: UInt32, _ body: (CreateExtras) throws(Errno) -> T
    ) throws(Errno) -> T {
        var extras = CreateExtras()
        extras.umask = umask
        guard extensionLength > 0 else { return try body(extras) }
        guard extensionLength <= FuseWire.maxExtensionBytes else { throw .tooBig }
        return try withUnsafeTemporaryAllocation(byteCount: extensionLength, alignment: 8) {
            (buffer) throws(Errno) -> T in
            guard r.read(into: buffer) else { throw .invalidArgument }
            try Self.parseExtensions(UnsafeRawBufferPointer(buffer), into: &extras)
            return try body(extras)
        }
    }

    /// Walks `fuse_ext_header` records: types 0...31 are a security-context header
    /// (the type is the number of contexts), CVFS_FUSE_EXT_GROUPS the caller's groups.
    /// Unknown types are skipped; a record that overruns the area is EINVAL.
    static func parseExtensions(_ area: UnsafeRawBufferPointer, into extras: inout CreateExtras) throws(Errno) {
        func u32(_ at: Int) -> UInt32 { area.loadUnaligned(fromByteOffset: at, as: UInt32.self) }
        let headerSize = MemoryLayout<fuse_ext_header>.size
        var offset = 0
        while offset < area.count {
            guard area.count - offset >= headerSize else { throw .invalidArgument }
            let size = Int(u32(offset))
            let type = u32(offset + 4)
            guard size >= headerSize, size % 8 == 0, size <= area.count - offset else { throw .invalidArgument }
            let end = offset + size
            if type <= UInt32(FUSE_MAX_NR_SECCTX.rawValue) {
                // The kernel sends at most one context; later ones are ignored.
                if type >= 1 {
                    let contextStart = offset + headerSize
                    let contextHeader = MemoryLayout<fuse_secctx>.size
                    guard end - contextStart >= contextHeader else { throw .invalidArgument }
                    let valueLength = Int(u32(contextStart))
                    let nameStart = contextStart + contextHeader
                    let rest = UnsafeRawBufferPointer(rebasing: area[nameStart..<end])
                    guard let nul = rest.firstIndex(of: 0) else { throw .invalidArgument }
                    guard nul > 0, nul <= FuseWire.maxNameLength else { throw .invalidArgument }
                    let valueStart = nameStart + nul + 1
                    guard valueLength <= end - valueStart else { throw .invalidArgument }
                    guard let base = area.baseAddress else { throw .invalidArgument }
                    extras.securityContextName = FileName(
                        cString: (base + nameStart).assumingMemoryBound(to: CChar.self), count: nul)
                    extras.securityContextValue = UnsafeRawBufferPointer(start: base + valueStart, count: valueLength)
                }
            } else if type == UInt32(CVFS_FUSE_EXT_GROUPS) {
                let groupsStart = offset + headerSize
                guard end - groupsStart >= 4 else { throw .invalidArgument }
                let count = Int(u32(groupsStart))
                guard count <= (end - groupsStart - 4) / 4 else { throw .invalidArgument }
                if count >= 1 { extras.supplementaryGroup = u32(groupsStart + 4) }
            }
            offset = end
        }
    }
}

// Reading one fixed-layout wire struct. No `BitwiseCopyable` constraint: release
// builds serialise the dispatcher for cross-module specialisation, and Swift 6.3
// cannot deserialise the implicit `BitwiseCopyable` conformances of the imported
// FUSE structs (the compiler crashes). Only the kernel's plain C structs are passed here.
extension FuseReader {
    @inline(__always)
    mutating func readWire<T>(_ type: T.Type = T.self) -> T? {
        assert(_isPOD(T.self), "wire structs are plain data")
        return withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { slot -> T? in
            guard read(into: UnsafeMutableRawBufferPointer(slot)) else { return nil }
            return slot[0]
        }
    }
}
