import XCTest
import CVirtioFS
import Posix
@testable import FUSE

final class ReaddirTests: XCTestCase {
    struct Dirent: Equatable {
        var ino: UInt64
        var off: UInt64
        var type: UInt32
        var name: String
        var node: UInt64? = nil
    }

    /// Walks the records the way the kernel's fuse_parse_dirfile does, checking alignment.
    func parse(_ payload: [UInt8], plus: Bool, file: StaticString = #filePath, line: UInt = #line) -> [Dirent] {
        var out: [Dirent] = []
        var offset = 0
        let prefix = plus ? MemoryLayout<fuse_entry_out>.size : 0
        payload.withUnsafeBytes { p in
            while offset + prefix + 24 <= p.count {
                let entry = plus ? p.loadUnaligned(fromByteOffset: offset, as: fuse_entry_out.self) : nil
                let d = p.loadUnaligned(fromByteOffset: offset + prefix, as: fuse_dirent.self)
                let nameStart = offset + prefix + 24
                let name = String(decoding: p[nameStart..<nameStart + Int(d.namelen)], as: UTF8.self)
                let length = (prefix + 24 + Int(d.namelen) + 7) & ~7
                // Padding is zeroed, never stale memory.
                XCTAssertTrue(p[(nameStart + Int(d.namelen))..<(offset + length)].allSatisfy { $0 == 0 }, file: file, line: line)
                out.append(Dirent(ino: d.ino, off: d.off, type: d.type, name: name, node: entry?.nodeid))
                offset += length
            }
        }
        XCTAssertEqual(offset, payload.count, "records fill the reply exactly", file: file, line: line)
        return out
    }

    func readdir(_ server: Server<RecordingFS>, plus: Bool, offset: UInt64 = 0, size: UInt32) -> Reply {
        send(server, Request(plus ? .readdirplus : .readdir,
                             bytes(of: fuse_read_in(fh: 55, offset: offset, size: size, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))))
    }

    func fsWithEntries() -> RecordingFS {
        let fs = RecordingFS()
        fs.dirEntries = [
            (".", 1, UInt32(DT_DIR), nil),
            ("..", 1, UInt32(DT_DIR), nil),
            ("a", 20, UInt32(DT_REG), testEntry(20)),
            ("eight888", 21, UInt32(DT_LNK), testEntry(21)),
            ("a-much-longer-name-for-a-file.txt", 22, UInt32(DT_REG), testEntry(22)),
        ]
        return fs
    }

    func testReaddirPacksAlignedRecords() {
        let server = initializedServer(fsWithEntries())
        let reply = readdir(server, plus: false, size: 4096)
        XCTAssertEqual(reply.error, 0)
        // 24-byte header + name, rounded up to 8: 32, 32, 32, 32, 64.
        XCTAssertEqual(reply.payload.count, 32 + 32 + 32 + 32 + 64)
        XCTAssertEqual(parse(reply.payload, plus: false), [
            Dirent(ino: 1, off: 1, type: UInt32(DT_DIR), name: "."),
            Dirent(ino: 1, off: 2, type: UInt32(DT_DIR), name: ".."),
            Dirent(ino: 20, off: 3, type: UInt32(DT_REG), name: "a"),
            Dirent(ino: 21, off: 4, type: UInt32(DT_LNK), name: "eight888"),
            Dirent(ino: 22, off: 5, type: UInt32(DT_REG), name: "a-much-longer-name-for-a-file.txt"),
        ])
    }

    func testReaddirStopsWhenTheNextRecordDoesNotFit() {
        let fs = fsWithEntries()
        let server = initializedServer(fs)
        // Room for three 32-byte records and most of a fourth.
        let reply = readdir(server, plus: false, size: 120)
        XCTAssertEqual(parse(reply.payload, plus: false).map(\.name), [".", "..", "a"])
        // The kernel continues from the last offset it saw.
        let next = readdir(server, plus: false, offset: 3, size: 4096)
        XCTAssertEqual(parse(next.payload, plus: false).map(\.name), ["eight888", "a-much-longer-name-for-a-file.txt"])
    }

    func testReaddirSmallerThanOneRecordIsEmpty() {
        let server = initializedServer(fsWithEntries())
        let reply = readdir(server, plus: false, size: 16)
        XCTAssertEqual(reply.error, 0)
        XCTAssertEqual(reply.payload, [])
    }

    func testReaddirplusCarriesEntriesAndZeroNodeForDots() {
        let server = initializedServer(fsWithEntries())
        let reply = readdir(server, plus: true, size: 4096)
        let records = parse(reply.payload, plus: true)
        XCTAssertEqual(records.map(\.name), [".", "..", "a", "eight888", "a-much-longer-name-for-a-file.txt"])
        XCTAssertEqual(records.map(\.node), [0, 0, 20, 21, 22])
        XCTAssertEqual(reply.payload.count, 3 * (128 + 32) + (128 + 32) + (128 + 64))
        // The entry for "a" is the full lookup reply.
        let entry = reply.payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2 * 160, as: fuse_entry_out.self) }
        XCTAssertEqual(bytes(of: entry), bytes(of: fuse_entry_out(testEntry(20))))
        // "." gets its inode and type in the attributes, nothing else.
        let dot = reply.payload.withUnsafeBytes { $0.loadUnaligned(as: fuse_entry_out.self) }
        XCTAssertEqual(dot.attr.ino, 1)
        XCTAssertEqual(dot.attr.mode, S_IFDIR)
        XCTAssertEqual(dot.entry_valid, 0)
    }

    func testReaddirplusStopsBeforeTheLookupOfAnEntryThatWouldNotFit() {
        let fs = fsWithEntries()
        let server = initializedServer(fs)
        let reply = readdir(server, plus: true, size: 2 * 160 + 100)
        XCTAssertEqual(parse(reply.payload, plus: true).map(\.name), [".", ".."])
    }

    func testReaddirSizeIsBoundByTheWriter() {
        let server = initializedServer(fsWithEntries())
        let reply = send(server, Request(.readdir, bytes(of: fuse_read_in(fh: 55, offset: 0, size: 4096, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))),
                         capacity: 16 + 70)
        XCTAssertEqual(reply.length, 16 + 64)
        XCTAssertEqual(parse(reply.payload, plus: false).map(\.name), [".", ".."])
    }

    func testPackerRefusesEmptyAndOverlongNames() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        let packer = DirentPacker(buffer, plus: false)
        XCTAssertFalse(packer.fits(nameLength: 0))
        XCTAssertFalse(packer.fits(nameLength: 256))
        XCTAssertTrue(packer.fits(nameLength: 255))
    }
}
