import XCTest
import Foundation
import Glibc
import CVirtioFS
import FUSE
import Posix
import Options
@testable import Passthrough

/// A reply buffer in memory standing in for guest memory.
struct MemoryWriter: FuseWriter {
    var storage: UnsafeMutableRawBufferPointer
    var written = 0
    var capacity: Int { storage.count }

    init(capacity: Int) {
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 8)
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= capacity - written else { return false }
        UnsafeMutableRawBufferPointer(rebasing: storage[written..<(written + bytes.count)]).copyMemory(from: bytes)
        written += bytes.count
        return true
    }

    mutating func overwrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        guard offset >= 0, offset + bytes.count <= written else { return false }
        UnsafeMutableRawBufferPointer(rebasing: storage[offset..<(offset + bytes.count)]).copyMemory(from: bytes)
        return true
    }

    mutating func withIOVecs<E: Error>(count: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int) throws(E) -> Int? {
        guard count <= capacity - written else { return nil }
        // Two iovecs, as a chain split over descriptors would give.
        let half = count / 2
        let base = storage.baseAddress! + written
        let vecs = [iovec(iov_base: base, iov_len: half), iovec(iov_base: base + half, iov_len: count - half)]
        let n = try vecs.withUnsafeBufferPointer { (b) throws(E) -> Int in try body(b) }
        written += n
        return n
    }

    var bytes: [UInt8] { Array(storage[0..<written]) }
}

/// Request bytes in memory standing in for guest memory.
struct MemoryReader: FuseReader {
    var storage: UnsafeMutableRawBufferPointer
    var cursor = 0
    var remaining: Int { storage.count - cursor }

    init(_ bytes: [UInt8]) {
        storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, bytes.count), alignment: 8)
        bytes.withUnsafeBytes { storage.copyMemory(from: $0) }
        storage = UnsafeMutableRawBufferPointer(rebasing: storage[0..<bytes.count])
    }

    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard buffer.count <= remaining else { return false }
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: storage[cursor..<(cursor + buffer.count)]))
        cursor += buffer.count
        return true
    }

    mutating func skip(_ count: Int) -> Bool {
        guard count <= remaining else { return false }
        cursor += count
        return true
    }

    mutating func withIOVecs<E: Error>(count: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int) throws(E) -> Int? {
        guard count <= remaining else { return nil }
        let vec = [iovec(iov_base: storage.baseAddress.map { $0 + cursor }, iov_len: count)]
        let n = try vec.withUnsafeBufferPointer { (b) throws(E) -> Int in try body(b) }
        cursor += n
        return n
    }
}

/// Collects directory entries, with a byte budget like a real reply buffer.
struct CollectingSink: DirectorySink {
    var capacity: Int
    var used = 0
    var names: [String] = []
    var offsets: [UInt64] = []
    var entries: [Entry?] = []

    static func size(_ nameLength: Int, plus: Bool) -> Int {
        let dirent = (24 + nameLength + 7) & ~7
        return plus ? dirent + 128 : dirent
    }

    var plus = false

    func fits(nameLength: Int) -> Bool { used + Self.size(nameLength, plus: plus) <= capacity }

    var remainingBytes: Int { capacity - used }

    mutating func add(_ entry: DirectoryEntry, plus: Entry?) -> Bool {
        guard fits(nameLength: entry.name.count) else { return false }
        used += Self.size(entry.name.count, plus: self.plus)
        names.append(entry.name.debugDescription)
        offsets.append(entry.nextOffset)
        entries.append(plus)
        return true
    }
}

/// A fresh shared directory per test and a filesystem over it.
class PassthroughTestCase: XCTestCase {
    var directory: String = ""
    var fs: PassthroughFileSystem!
    let root = RequestContext(unique: 1, uid: 0, gid: 0, pid: 1)
    let user = RequestContext(unique: 2, uid: 1000, gid: 1000, pid: 2)

    override func setUp() {
        super.setUp()
        var template = Array("/tmp/passthrough-test-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        chmod(directory, 0o755)
        fs = try! makeFileSystem()
    }

    override func tearDown() {
        fs = nil
        _ = try? FileManager.default.removeItem(atPath: directory)
        super.tearDown()
    }

    func makeFileSystem(_ adjust: (inout PassthroughConfiguration) -> Void = { _ in }) throws -> PassthroughFileSystem {
        var configuration = PassthroughConfiguration(root: directory)
        configuration.xattr = true
        configuration.posixLocks = true
        configuration.flock = true
        adjust(&configuration)
        return try PassthroughFileSystem(configuration: configuration, logger: .discarding)
    }

    /// A guest name; the storage is deliberately leaked (tests only).
    func name(_ s: String) -> FileName {
        let p = strdup(s)!
        return FileName(cString: p, count: strlen(p))
    }

    func hostPath(_ relative: String) -> String { directory + "/" + relative }

    func writeHostFile(_ relative: String, _ contents: String) {
        FileManager.default.createFile(atPath: hostPath(relative), contents: Data(contents.utf8))
    }

    func hostStat(_ relative: String) -> stat {
        var st = stat()
        XCTAssertEqual(lstat(hostPath(relative), &st), 0, "lstat \(relative)")
        return st
    }

    func assertErrno<T>(_ expected: Errno, _ body: () throws -> T, file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("expected \(expected), got success", file: file, line: line)
        } catch {
            XCTAssertEqual(error as? Errno, expected, "expected \(expected), got \(error)", file: file, line: line)
        }
    }

    func write(_ node: NodeID, _ handle: HandleID, _ text: String, at offset: UInt64 = 0, killSuidGid: Bool = false) throws(Errno) -> Int {
        var reader = MemoryReader(Array(text.utf8))
        return try fs.write(root, node: node, handle: handle, offset: offset, size: UInt32(text.utf8.count), flags: 0,
                            killSuidGid: killSuidGid, from: &reader)
    }

    func read(_ node: NodeID, _ handle: HandleID, at offset: UInt64 = 0, size: UInt32 = 4096) throws(Errno) -> String {
        var writer = MemoryWriter(capacity: Int(size))
        _ = try fs.read(root, node: node, handle: handle, offset: offset, size: size, into: &writer)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    func lookupCount(_ node: NodeID) -> UInt64? {
        fs.inodes.lookups(node)
    }

    /// Reads a whole directory through readdir, resuming from each last offset.
    func listDirectory(_ node: NodeID, plus: Bool = false, capacity: Int = 4096) throws -> CollectingSink {
        let handle = try fs.opendir(root, node: node, flags: 0).handle
        defer { try? fs.releasedir(root, node: node, handle: handle, flags: 0) }
        var all = CollectingSink(capacity: Int.max)
        all.plus = plus
        var offset: UInt64 = 0
        while true {
            var page = CollectingSink(capacity: capacity)
            page.plus = plus
            try fs.readdir(root, node: node, handle: handle, offset: offset, plus: plus, into: &page)
            if page.names.isEmpty { break }
            all.names += page.names
            all.offsets += page.offsets
            all.entries += page.entries
            offset = page.offsets.last!
        }
        return all
    }
}
