#if canImport(Glibc)
import Glibc
#endif
import Options

/// The device state a migration carries (docs/migration.md describes the bytes).
/// Pure data: `MigrationCodec` turns it into bytes and refuses anything malformed.
public struct MigrationState: Equatable, Sendable {
    /// The FUSE session as the dispatcher agreed it at INIT.
    public var fuseMinor: UInt32 = 0
    public var fuseFlags: UInt64 = 0
    /// The flags the filesystem chose at INIT.
    public var filesystemFlags: UInt64 = 0
    public var mode: MigrationMode = .findPaths
    /// Node and handle ids are never reused, so the destination continues after these.
    public var nextNodeID: UInt64 = 2
    public var nextHandleID: UInt64 = 1
    public var inodes: [Inode] = []
    public var handles: [Handle] = []

    public init() {}

    public enum Location: Equatable, Sendable {
        /// Relative to the shared directory, components separated by "/"; empty for the root.
        case path([UInt8])
        /// A `struct file_handle` with its 8-byte header.
        case fileHandle([UInt8])
        /// The source could not say where the file is (deleted, moved away); why.
        case lost([UInt8])
    }

    public struct Inode: Equatable, Sendable {
        public var id: UInt64
        public var lookups: UInt64
        /// The S_IFMT bits.
        public var fileType: UInt32
        /// st_ino on the source (checked with --migration-verify-handles).
        public var inodeNumber: UInt64
        public var location: Location

        public init(id: UInt64, lookups: UInt64, fileType: UInt32, inodeNumber: UInt64, location: Location) {
            self.id = id; self.lookups = lookups; self.fileType = fileType
            self.inodeNumber = inodeNumber; self.location = location
        }
    }

    public struct Handle: Equatable, Sendable {
        public var id: UInt64
        public var node: UInt64
        /// The file status flags of the open file (O_ACCMODE, O_APPEND, O_DIRECT, ...).
        public var flags: UInt32

        public init(id: UInt64, node: UInt64, flags: UInt32) {
            self.id = id; self.node = node; self.flags = flags
        }
    }
}

/// Encodes and decodes `MigrationState`, version 1. Every field is little-endian;
/// the last 8 bytes are an FNV-1a hash of all before them.
public enum MigrationCodec {
    public static let magic: [UInt8] = Array("SVFSMIG\u{0}".utf8)
    public static let version: UInt32 = 1
    static let headerSize = 24
    static let inodeRecordSize = 32
    static let handleRecordSize = 24
    static let maxPathLength = Int(PATH_MAX)
    /// struct file_handle: 8 bytes of header and at most MAX_HANDLE_SZ (128) bytes.
    static let maxFileHandleLength = 8 + 128
    static let fileTypes: Set<UInt32> = [S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK].map { UInt32($0) }
        .reduce(into: Set<UInt32>()) { $0.insert($1) }

    public static func encode(_ s: MigrationState) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(headerSize + 48 + s.inodes.count * (inodeRecordSize + 32) + s.handles.count * handleRecordSize + 8)
        func u8(_ v: UInt8) { out.append(v) }
        func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        out.append(contentsOf: magic)
        u32(version)
        u32(s.mode == .fileHandles ? 1 : 0)
        u64(0) // body length, patched below
        u32(s.fuseMinor); u32(0)
        u64(s.fuseFlags); u64(s.filesystemFlags)
        u64(s.nextNodeID); u64(s.nextHandleID)
        u32(UInt32(clamping: s.inodes.count)); u32(UInt32(clamping: s.handles.count))
        for inode in s.inodes {
            u64(inode.id); u64(inode.lookups); u64(inode.inodeNumber); u32(inode.fileType)
            let (kind, bytes): (UInt8, [UInt8])
            switch inode.location {
            case .path(let b): (kind, bytes) = (0, b)
            case .fileHandle(let b): (kind, bytes) = (1, b)
            case .lost(let b): (kind, bytes) = (2, Array(b.prefix(maxPathLength)))
            }
            u8(kind); u8(0); u16(UInt16(clamping: bytes.count))
            out.append(contentsOf: bytes.prefix(Int(UInt16.max)))
        }
        for h in s.handles {
            u64(h.id); u64(h.node); u32(h.flags); u32(0)
        }
        let body = UInt64(out.count - headerSize)
        withUnsafeBytes(of: body.littleEndian) { raw in
            for i in 0..<8 { out[16 + i] = raw[i] }
        }
        u64(fnv1a(out[...]))
        return out
    }

    /// FNV-1a, 64 bits: any single changed byte changes it (each step is a bijection).
    static func fnv1a(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }

    /// Decodes and checks everything a destination relies on; a clear error otherwise.
    public static func decode(_ bytes: [UInt8]) throws(MigrationFormatError) -> MigrationState {
        guard bytes.count >= headerSize + 8 else { throw .truncated(bytes.count) }
        guard Array(bytes[0..<8]) == magic else { throw .notMigrationState }
        var r = Reader(bytes: bytes, position: 8, end: bytes.count - 8)
        let version = try r.u32()
        guard version == MigrationCodec.version else { throw .unsupportedVersion(version) }
        let flags = try r.u32()
        guard flags & ~1 == 0 else { throw .bad("unknown header flags 0x\(String(flags, radix: 16))") }
        let body = try r.u64()
        guard body == UInt64(bytes.count - headerSize - 8) else {
            throw .bad("body is \(bytes.count - headerSize - 8) bytes, header says \(body)")
        }
        let stored = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: bytes.count - 8, as: UInt64.self)) }
        guard stored == fnv1a(bytes[0..<(bytes.count - 8)]) else { throw .checksum }

        var s = MigrationState()
        s.mode = flags & 1 != 0 ? .fileHandles : .findPaths
        s.fuseMinor = try r.u32()
        guard try r.u32() == 0 else { throw .bad("reserved session field is not zero") }
        s.fuseFlags = try r.u64()
        s.filesystemFlags = try r.u64()
        s.nextNodeID = try r.u64()
        s.nextHandleID = try r.u64()
        let inodeCount = Int(try r.u32())
        let handleCount = Int(try r.u32())
        // Counts bounded by the bytes present before anything is reserved.
        guard inodeCount <= r.remaining / inodeRecordSize,
              handleCount <= (r.remaining - inodeCount * inodeRecordSize) / handleRecordSize else {
            throw .bad("\(inodeCount) inodes and \(handleCount) handles cannot fit in \(r.remaining) bytes")
        }
        var seen = Set<UInt64>()
        s.inodes.reserveCapacity(inodeCount)
        for _ in 0..<inodeCount {
            let id = try r.u64(), lookups = try r.u64(), ino = try r.u64(), type = try r.u32()
            let kind = try r.u8()
            guard try r.u8() == 0 else { throw .bad("inode \(id): reserved byte is not zero") }
            let length = Int(try r.u16())
            let data = try r.bytes(length)
            guard id != 0, id < s.nextNodeID else { throw .bad("inode id \(id) is not between 1 and \(s.nextNodeID - 1)") }
            guard seen.insert(id).inserted else { throw .bad("inode \(id) appears twice") }
            guard fileTypes.contains(type) else { throw .bad("inode \(id): file type 0o\(String(type, radix: 8)) is unknown") }
            let location: MigrationState.Location
            switch kind {
            case 0:
                try checkPath(data, id: id)
                location = .path(data)
            case 1:
                guard length >= 8, length <= maxFileHandleLength,
                      data.withUnsafeBytes({ UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }) == UInt32(length - 8) else {
                    throw .bad("inode \(id): a file handle of \(length) bytes is malformed")
                }
                location = .fileHandle(data)
            case 2:
                location = .lost(data)
            default:
                throw .bad("inode \(id): unknown location kind \(kind)")
            }
            s.inodes.append(MigrationState.Inode(id: id, lookups: lookups, fileType: type, inodeNumber: ino, location: location))
        }
        guard seen.contains(1) else { throw .bad("the root inode (1) is missing") }
        var handleIDs = Set<UInt64>()
        s.handles.reserveCapacity(handleCount)
        for _ in 0..<handleCount {
            let id = try r.u64(), node = try r.u64(), openFlags = try r.u32()
            guard try r.u32() == 0 else { throw .bad("handle \(id): reserved field is not zero") }
            guard id != 0, id < s.nextHandleID else { throw .bad("handle id \(id) is not between 1 and \(s.nextHandleID &- 1)") }
            guard handleIDs.insert(id).inserted else { throw .bad("handle \(id) appears twice") }
            guard seen.contains(node) else { throw .bad("handle \(id) refers to unknown inode \(node)") }
            s.handles.append(MigrationState.Handle(id: id, node: node, flags: openFlags))
        }
        guard r.remaining == 0 else { throw .bad("\(r.remaining) bytes after the last record") }
        return s
    }

    /// A path the destination may open below its shared directory: relative,
    /// no empty, "." or ".." component, no NUL, at most PATH_MAX bytes.
    static func checkPath(_ path: [UInt8], id: UInt64) throws(MigrationFormatError) {
        if path.isEmpty {
            guard id == 1 else { throw .bad("inode \(id): an empty path is only valid for the root") }
            return
        }
        guard path.count <= maxPathLength else { throw .bad("inode \(id): path longer than \(maxPathLength) bytes") }
        guard !path.contains(0) else { throw .bad("inode \(id): path contains NUL") }
        for component in path.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false) {
            if component.isEmpty || component.elementsEqual([46]) || component.elementsEqual([46, 46]) {
                throw .bad("inode \(id): path has an empty, \".\" or \"..\" component (absolute or not normalised)")
            }
        }
    }

    struct Reader {
        let bytes: [UInt8]
        var position: Int
        let end: Int
        var remaining: Int { end - position }

        mutating func take(_ n: Int) throws(MigrationFormatError) -> Int {
            guard n <= remaining else { throw .truncated(bytes.count) }
            defer { position += n }
            return position
        }
        mutating func u8() throws(MigrationFormatError) -> UInt8 { bytes[try take(1)] }
        mutating func u16() throws(MigrationFormatError) -> UInt16 {
            let p = try take(2)
            return bytes.withUnsafeBytes { UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: p, as: UInt16.self)) }
        }
        mutating func u32() throws(MigrationFormatError) -> UInt32 {
            let p = try take(4)
            return bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: p, as: UInt32.self)) }
        }
        mutating func u64() throws(MigrationFormatError) -> UInt64 {
            let p = try take(8)
            return bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: p, as: UInt64.self)) }
        }
        mutating func bytes(_ n: Int) throws(MigrationFormatError) -> [UInt8] {
            let p = try take(n)
            return Array(bytes[p..<(p + n)])
        }
    }
}

/// Why received state was refused.
public enum MigrationFormatError: Error, Equatable, CustomStringConvertible {
    case truncated(Int)
    case notMigrationState
    case unsupportedVersion(UInt32)
    case checksum
    case bad(String)

    public var description: String {
        switch self {
        case .truncated(let n): return "state truncated (\(n) bytes received)"
        case .notMigrationState: return "not a swift virtiofsd migration state (bad magic; from another daemon?)"
        case .unsupportedVersion(let v): return "state format version \(v) is not supported (this daemon reads version \(MigrationCodec.version))"
        case .checksum: return "state checksum mismatch (corrupted in transit)"
        case .bad(let why): return "malformed state: \(why)"
        }
    }
}
