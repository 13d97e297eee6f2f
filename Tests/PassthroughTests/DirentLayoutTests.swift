import XCTest
import Glibc
import CVirtioFS
import Posix
@testable import Passthrough

/// The getdents64 record layout READDIR parses comes from the C headers; these tests
/// pin it to the kernel's ABI and check it against records the kernel writes.
final class DirentLayoutTests: PassthroughTestCase {
    func testRecordFieldsSitWhereTheKernelABIPutsThem() {
        // struct linux_dirent64: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type, char d_name[].
        XCTAssertEqual(DirentLayout.inode, 0)
        XCTAssertEqual(DirentLayout.next, 8)
        XCTAssertEqual(DirentLayout.length, 16)
        XCTAssertEqual(DirentLayout.type, 18)
        XCTAssertEqual(DirentLayout.name, 19)
        XCTAssertEqual(DirentLayout.smallest, 24, "8 + 8 + 2 + 1 + a one-byte name and its NUL, padded to 8")
        XCTAssertEqual(DirentLayout.largest, 280, "a 255-byte name and its NUL, padded to 8")
        XCTAssertEqual(PassthroughFileSystem.largestDirentRecord, DirentLayout.largest)
    }

    func testLayoutReadsTheRecordsTheKernelWrites() throws {
        let longName = String(repeating: "n", count: Int(NAME_MAX))
        writeHostFile("a", "x")
        XCTAssertEqual(mkdir(hostPath("sub"), 0o755), 0)
        writeHostFile(longName, "y")
        var expected: [String: (UInt64, UInt8)] = [:]
        for (name, type) in [("a", UInt8(DT_REG)), ("sub", UInt8(DT_DIR)), (longName, UInt8(DT_REG))] {
            expected[name] = (UInt64(hostStat(name).st_ino), type)
        }

        let fd = open(directory, O_RDONLY | O_DIRECTORY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 8)
        defer { buffer.deallocate() }
        var found: [String: (UInt64, UInt8)] = [:]
        var lastNext: Int64 = 0
        while true {
            let filled = try Sys.getdents64(fd, buffer)
            if filled == 0 { break }
            var cursor = 0
            while cursor < filled {
                let length = Int(buffer.loadUnaligned(fromByteOffset: cursor + DirentLayout.length, as: UInt16.self))
                XCTAssertGreaterThanOrEqual(length, DirentLayout.smallest)
                XCTAssertLessThanOrEqual(length, DirentLayout.largest)
                XCTAssertEqual(length % 8, 0)
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[(cursor + DirentLayout.name)..<(cursor + length)])
                let name = String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
                found[name] = (buffer.loadUnaligned(fromByteOffset: cursor + DirentLayout.inode, as: UInt64.self),
                               buffer[cursor + DirentLayout.type])
                lastNext = buffer.loadUnaligned(fromByteOffset: cursor + DirentLayout.next, as: Int64.self)
                cursor += length
            }
            XCTAssertEqual(cursor, filled, "records end exactly at the end of what was read")
        }
        XCTAssertEqual(Set(found.keys), Set(expected.keys).union([".", ".."]))
        for (name, (inode, type)) in expected {
            XCTAssertEqual(found[name]?.0, inode, "\(name): d_ino")
            XCTAssertEqual(found[name]?.1, type, "\(name): d_type")
        }
        XCTAssertGreaterThan(lastNext, 0, "d_off: a cookie past the last record")
    }
}
