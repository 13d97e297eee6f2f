import XCTest
import Foundation
import CVirtioFS
import Posix
@testable import FUSE

// MARK: building requests

func bytes<T>(of value: T) -> [UInt8] {
    withUnsafeBytes(of: value) { Array($0) }
}

func cstr(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

/// One request as the kernel would lay it out: header, op struct, names, payload, extensions.
struct Request {
    var opcode: UInt32
    var nodeid: UInt64 = 5
    var unique: UInt64 = 77
    var uid: UInt32 = 1000
    var gid: UInt32 = 100
    var pid: UInt32 = 4242
    var body: [UInt8] = []
    var extensions: [UInt8] = []
    /// Added to the header's len to forge a lying header.
    var lengthError: Int = 0

    init(_ opcode: Opcode, nodeid: UInt64 = 5, _ parts: [UInt8]...) {
        self.opcode = opcode.rawValue
        self.nodeid = nodeid
        self.body = parts.flatMap { $0 }
    }

    init(rawOpcode: UInt32, _ parts: [UInt8]...) {
        self.opcode = rawOpcode
        self.body = parts.flatMap { $0 }
    }

    var bytes: [UInt8] {
        precondition(extensions.count % 8 == 0)
        var h = fuse_in_header()
        h.len = UInt32(40 + body.count + extensions.count + lengthError)
        h.opcode = opcode
        h.unique = unique
        h.nodeid = nodeid
        h.uid = uid
        h.gid = gid
        h.pid = pid
        h.total_extlen = UInt16(extensions.count / 8)
        return FUSETests.bytes(of: h) + body + extensions
    }
}

/// A security-context extension the way the kernel appends it.
func securityContextExtension(name: String, value: [UInt8]) -> [UInt8] {
    var record = bytes(of: fuse_secctx(size: UInt32(value.count), padding: 0)) + cstr(name) + value
    while (record.count + 8) % 8 != 0 { record.append(0) }
    return bytes(of: fuse_secctx_header(size: UInt32(record.count + 8), nr_secctx: 1)) + record
}

/// The supplementary-group extension with one group.
func groupsExtension(_ group: UInt32) -> [UInt8] {
    bytes(of: fuse_ext_header(size: 16, type: UInt32(CVFS_FUSE_EXT_GROUPS))) + bytes(of: UInt32(1)) + bytes(of: group)
}

// MARK: replies

struct Reply {
    var length: Int
    var bytes: [UInt8]

    var header: fuse_out_header? {
        guard bytes.count >= 16 else { return nil }
        return bytes.withUnsafeBytes { $0.loadUnaligned(as: fuse_out_header.self) }
    }
    var error: Int32 { header?.error ?? 999 }
    var payload: [UInt8] { Array(bytes.dropFirst(16)) }

    func decode<T>(_ type: T.Type, at offset: Int = 16) -> T? {
        guard bytes.count >= offset + MemoryLayout<T>.size else { return nil }
        return bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
    }
}

func send<FS: FileSystem>(_ server: Server<FS>, _ request: [UInt8], capacity: Int = 1 << 21) -> Reply {
    var input = request
    var output = [UInt8](repeating: 0xAA, count: capacity)
    let length = input.withUnsafeMutableBytes { inBytes in
        output.withUnsafeMutableBytes { outBytes in
            var reader = MemoryReader(UnsafeRawBufferPointer(inBytes))
            var writer = MemoryWriter(outBytes)
            let n = server.handle(&reader, &writer)
            XCTAssertLessThanOrEqual(n, writer.written, "reply longer than what was written")
            return n
        }
    }
    return Reply(length: length, bytes: Array(output.prefix(length)))
}

func send<FS: FileSystem>(_ server: Server<FS>, _ request: Request, capacity: Int = 1 << 21) -> Reply {
    send(server, request.bytes, capacity: capacity)
}

func initRequest(major: UInt32 = 7, minor: UInt32 = 38, flags: UInt64, maxReadahead: UInt32 = 131072) -> Request {
    var arg = fuse_init_in()
    arg.major = major
    arg.minor = minor
    arg.max_readahead = maxReadahead
    arg.flags = UInt32(truncatingIfNeeded: flags)
    arg.flags2 = UInt32(truncatingIfNeeded: flags >> 32)
    var r = Request(.initialize, nodeid: 0, bytes(of: arg))
    r.unique = 1
    return r
}

/// Every flag a 6.x kernel offers at INIT (bits 0-30 and 32-35, INIT_EXT included).
let allKernelFlags: UInt64 = 0x0000_000F_7FFF_FFFF

/// A server that has completed INIT with `flags` offered.
func initializedServer<FS: FileSystem>(_ fs: FS, flags: UInt64 = allKernelFlags, maxWrite: Int = 1 << 20,
                                       file: StaticString = #filePath, line: UInt = #line) -> Server<FS> {
    let server = Server(filesystem: fs, options: ServerOptions(maxWrite: maxWrite), logger: .discarding)
    let reply = send(server, initRequest(flags: flags))
    XCTAssertEqual(reply.error, 0, "INIT failed", file: file, line: line)
    return server
}

// MARK: a recording filesystem

func testStat(ino: UInt64, mode: UInt32 = S_IFREG | 0o644, size: Int = 1234) -> stat {
    var st = stat()
    st.st_ino = UInt(ino)
    st.st_mode = mode
    st.st_nlink = 2
    st.st_uid = 1000
    st.st_gid = 100
    st.st_size = size
    st.st_blocks = 8
    st.st_blksize = 4096
    st.st_rdev = 0x801 // makedev(8, 1) in glibc's layout
    st.st_atim = timespec(tv_sec: 1_700_000_001, tv_nsec: 11)
    st.st_mtim = timespec(tv_sec: 1_700_000_002, tv_nsec: 22)
    st.st_ctim = timespec(tv_sec: 1_700_000_003, tv_nsec: 33)
    return st
}

func testEntry(_ node: NodeID) -> Entry {
    Entry(nodeID: node, generation: 9, attributes: testStat(ino: node + 1000),
          attributesTimeout: Timeout(seconds: 3, nanoseconds: 4), entryTimeout: Timeout(seconds: 5, nanoseconds: 6))
}

/// Records each call as one line and answers with canned values.
final class RecordingFS: FileSystem, @unchecked Sendable {
    private let lock = NSLock()
    private var _calls: [String] = []
    var calls: [String] { lock.withLock { _calls } }
    /// Thrown by every call when set.
    var failure: Errno? = nil
    var wanted: InitFlags = []
    var offered: InitFlags? = nil
    var readData: [UInt8] = Array("hello, world".utf8)
    var xattrValue: [UInt8] = Array("value".utf8)
    var linkTarget: [UInt8] = Array("target/path".utf8)
    var dirEntries: [(name: String, inode: UInt64, type: UInt32, plus: Entry?)] = []
    var lastExtras: (umask: UInt32, contextName: String?, contextValue: [UInt8]?, group: UInt32?)? = nil

    func record(_ line: String) throws(Errno) {
        lock.withLock { _calls.append(line) }
        if let failure { throw failure }
    }

    func keep(_ extras: CreateExtras) {
        lastExtras = (extras.umask, extras.securityContextName?.debugDescription,
                      extras.securityContextValue.map { Array($0) }, extras.supplementaryGroup)
    }

    func ctxText(_ c: RequestContext) -> String { "u\(c.uid) g\(c.gid) p\(c.pid) #\(c.unique)" }

    func initialize(capable: InitFlags) throws(Errno) -> InitFlags {
        offered = capable
        try record("init")
        return wanted
    }
    func destroy() { try? record("destroy") }
    func lookup(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) -> Entry {
        try record("lookup \(ctxText(ctx)) parent=\(parent) name=\(name.debugDescription)")
        return testEntry(10)
    }
    func forget(_ node: NodeID, count: UInt64) { try? record("forget \(node) \(count)") }
    func getattr(_ ctx: RequestContext, node: NodeID, handle: HandleID?) throws(Errno) -> AttributesReply {
        try record("getattr node=\(node) handle=\(handle.map(String.init) ?? "nil")")
        return AttributesReply(attributes: testStat(ino: node), timeout: Timeout(seconds: 7, nanoseconds: 8))
    }
    func setattr(_ ctx: RequestContext, node: NodeID, _ a: SetAttributes) throws(Errno) -> AttributesReply {
        try record("setattr node=\(node) valid=\(a.valid.rawValue) mode=\(String(a.mode, radix: 8)) uid=\(a.uid) gid=\(a.gid) size=\(a.size) atime=\(a.atime.tv_sec).\(a.atime.tv_nsec) mtime=\(a.mtime.tv_sec).\(a.mtime.tv_nsec) handle=\(a.handle.map(String.init) ?? "nil") owner=\(a.lockOwner.map(String.init) ?? "nil")")
        return AttributesReply(attributes: testStat(ino: node), timeout: Timeout(seconds: 1))
    }
    func readlink(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try record("readlink node=\(node) capacity=\(buffer.count)")
        guard linkTarget.count <= buffer.count else { throw .nameTooLong }
        buffer.copyBytes(from: linkTarget)
        return linkTarget.count
    }
    func symlink(_ ctx: RequestContext, target: FileName, parent: NodeID, name: FileName, extras: CreateExtras) throws(Errno) -> Entry {
        keep(extras)
        try record("symlink parent=\(parent) name=\(name.debugDescription) target=\(target.debugDescription)")
        return testEntry(11)
    }
    func mknod(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, rdev: UInt32, extras: CreateExtras) throws(Errno) -> Entry {
        keep(extras)
        try record("mknod parent=\(parent) name=\(name.debugDescription) mode=\(String(mode, radix: 8)) rdev=\(rdev) umask=\(String(extras.umask, radix: 8))")
        return testEntry(12)
    }
    func mkdir(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, extras: CreateExtras) throws(Errno) -> Entry {
        keep(extras)
        try record("mkdir parent=\(parent) name=\(name.debugDescription) mode=\(String(mode, radix: 8)) umask=\(String(extras.umask, radix: 8))")
        return testEntry(13)
    }
    func unlink(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) {
        try record("unlink parent=\(parent) name=\(name.debugDescription)")
    }
    func rmdir(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) {
        try record("rmdir parent=\(parent) name=\(name.debugDescription)")
    }
    func rename(_ ctx: RequestContext, parent: NodeID, name: FileName, newParent: NodeID, newName: FileName, flags: UInt32) throws(Errno) {
        try record("rename \(parent)/\(name.debugDescription) -> \(newParent)/\(newName.debugDescription) flags=\(flags)")
    }
    func link(_ ctx: RequestContext, node: NodeID, newParent: NodeID, newName: FileName) throws(Errno) -> Entry {
        try record("link node=\(node) -> \(newParent)/\(newName.debugDescription)")
        return testEntry(node)
    }
    func open(_ ctx: RequestContext, node: NodeID, flags: UInt32, killSuidGid: Bool) throws(Errno) -> OpenReply {
        try record("open node=\(node) flags=\(flags) kill=\(killSuidGid)")
        return OpenReply(handle: 99, flags: .keepCache)
    }
    func read<W: FuseWriter>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, size: UInt32, into writer: inout W) throws(Errno) -> Int {
        try record("read node=\(node) fh=\(handle) off=\(offset) size=\(size)")
        let n = min(Int(size), readData.count)
        let data = readData
        return writer.withIOVecs(count: n) { iov in
            data.withUnsafeBytes { UnsafeMutableRawPointer(iov[0].iov_base!).copyMemory(from: $0.baseAddress!, byteCount: n) }
            return n
        } ?? 0
    }
    func write<R: FuseReader>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, size: UInt32, flags: UInt32, killSuidGid: Bool, from reader: inout R) throws(Errno) -> Int {
        var data = [UInt8](repeating: 0, count: Int(size))
        _ = data.withUnsafeMutableBytes { reader.read(into: $0) }
        try record("write node=\(node) fh=\(handle) off=\(offset) flags=\(flags) kill=\(killSuidGid) data=\(String(decoding: data, as: UTF8.self))")
        return Int(size)
    }
    func statfs(_ ctx: RequestContext, node: NodeID) throws(Errno) -> statvfs {
        try record("statfs node=\(node)")
        var s = statvfs()
        s.f_bsize = 4096; s.f_frsize = 512; s.f_blocks = 100; s.f_bfree = 50; s.f_bavail = 40
        s.f_files = 1000; s.f_ffree = 900; s.f_namemax = 255
        return s
    }
    func release(_ ctx: RequestContext, node: NodeID, handle: HandleID, flags: UInt32, lockOwner: UInt64?, flush: Bool, flockRelease: Bool) throws(Errno) {
        try record("release node=\(node) fh=\(handle) flags=\(flags) owner=\(lockOwner.map(String.init) ?? "nil") flush=\(flush) flock=\(flockRelease)")
    }
    func fsync(_ ctx: RequestContext, node: NodeID, handle: HandleID, datasync: Bool) throws(Errno) {
        try record("fsync node=\(node) fh=\(handle) datasync=\(datasync)")
    }
    func flush(_ ctx: RequestContext, node: NodeID, handle: HandleID, lockOwner: UInt64) throws(Errno) {
        try record("flush node=\(node) fh=\(handle) owner=\(lockOwner)")
    }
    func setxattr(_ ctx: RequestContext, node: NodeID, name: FileName, value: UnsafeRawBufferPointer, flags: UInt32, extFlags: UInt32) throws(Errno) {
        try record("setxattr node=\(node) name=\(name.debugDescription) value=\(String(decoding: value, as: UTF8.self)) flags=\(flags) ext=\(extFlags)")
    }
    func getxattr(_ ctx: RequestContext, node: NodeID, name: FileName, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        try record("getxattr node=\(node) name=\(name.debugDescription) capacity=\(buffer.map { String($0.count) } ?? "nil")")
        guard let buffer else { return xattrValue.count }
        guard buffer.count >= xattrValue.count else { throw .range }
        buffer.copyBytes(from: xattrValue)
        return xattrValue.count
    }
    func listxattr(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        try record("listxattr node=\(node) capacity=\(buffer.map { String($0.count) } ?? "nil")")
        let list = cstr("user.a") + cstr("user.b")
        guard let buffer else { return list.count }
        guard buffer.count >= list.count else { throw .range }
        buffer.copyBytes(from: list)
        return list.count
    }
    func removexattr(_ ctx: RequestContext, node: NodeID, name: FileName) throws(Errno) {
        try record("removexattr node=\(node) name=\(name.debugDescription)")
    }
    func opendir(_ ctx: RequestContext, node: NodeID, flags: UInt32) throws(Errno) -> OpenReply {
        try record("opendir node=\(node) flags=\(flags)")
        return OpenReply(handle: 55, flags: .cacheDirectory)
    }
    func readdir<S: DirectorySink>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, plus: Bool, into sink: inout S) throws(Errno) {
        try record("readdir node=\(node) fh=\(handle) off=\(offset) plus=\(plus)")
        var index = offset < UInt64(dirEntries.count) ? Int(offset) : dirEntries.count
        while index < dirEntries.count {
            let e = dirEntries[index]
            var name = Array(e.name.utf8) + [0]
            let count = name.count - 1
            guard sink.fits(nameLength: count) else { break }
            let added = name.withUnsafeMutableBufferPointer { p in
                p.withMemoryRebound(to: CChar.self) { c in
                    sink.add(DirectoryEntry(inode: e.inode, nextOffset: UInt64(index + 1), type: e.type,
                                            name: FileName(cString: c.baseAddress!, count: count)), plus: plus ? e.plus : nil)
                }
            }
            guard added else { break }
            index += 1
        }
    }
    func releasedir(_ ctx: RequestContext, node: NodeID, handle: HandleID, flags: UInt32) throws(Errno) {
        try record("releasedir node=\(node) fh=\(handle) flags=\(flags)")
    }
    func fsyncdir(_ ctx: RequestContext, node: NodeID, handle: HandleID, datasync: Bool) throws(Errno) {
        try record("fsyncdir node=\(node) fh=\(handle) datasync=\(datasync)")
    }
    func getlk(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock) throws(Errno) -> FileLock {
        try record("getlk node=\(node) fh=\(handle) owner=\(owner) \(lock.start)-\(lock.end) type=\(lock.type) pid=\(lock.pid)")
        return FileLock(start: 10, end: 20, type: Int32(F_WRLCK), pid: 321)
    }
    func setlk(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock, wait: Bool, flock: Bool) throws(Errno) {
        try record("setlk node=\(node) fh=\(handle) owner=\(owner) \(lock.start)-\(lock.end) type=\(lock.type) wait=\(wait) flock=\(flock)")
    }
    func access(_ ctx: RequestContext, node: NodeID, mask: UInt32) throws(Errno) {
        try record("access node=\(node) mask=\(mask)")
    }
    func create(_ ctx: RequestContext, parent: NodeID, name: FileName, mode: UInt32, flags: UInt32, extras: CreateExtras) throws(Errno) -> (Entry, OpenReply) {
        keep(extras)
        try record("create parent=\(parent) name=\(name.debugDescription) mode=\(String(mode, radix: 8)) flags=\(flags) umask=\(String(extras.umask, radix: 8))")
        return (testEntry(14), OpenReply(handle: 98, flags: .directIO))
    }
    func tmpfile(_ ctx: RequestContext, parent: NodeID, mode: UInt32, flags: UInt32, extras: CreateExtras) throws(Errno) -> (Entry, OpenReply) {
        keep(extras)
        try record("tmpfile parent=\(parent) mode=\(String(mode, radix: 8)) flags=\(flags) umask=\(String(extras.umask, radix: 8))")
        return (testEntry(15), OpenReply(handle: 97))
    }
    func fallocate(_ ctx: RequestContext, node: NodeID, handle: HandleID, mode: UInt32, offset: UInt64, length: UInt64) throws(Errno) {
        try record("fallocate node=\(node) fh=\(handle) mode=\(mode) off=\(offset) len=\(length)")
    }
    func lseek(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, whence: UInt32) throws(Errno) -> UInt64 {
        try record("lseek node=\(node) fh=\(handle) off=\(offset) whence=\(whence)")
        return 4096
    }
    func copyFileRange(_ ctx: RequestContext, nodeIn: NodeID, handleIn: HandleID, offsetIn: UInt64,
                       nodeOut: NodeID, handleOut: HandleID, offsetOut: UInt64, length: UInt64, flags: UInt64) throws(Errno) -> Int {
        try record("copy \(nodeIn)/\(handleIn)@\(offsetIn) -> \(nodeOut)/\(handleOut)@\(offsetOut) len=\(length) flags=\(flags)")
        return Int(min(length, 1000))
    }
    func syncfs(_ ctx: RequestContext, node: NodeID) throws(Errno) {
        try record("syncfs node=\(node)")
    }
}
