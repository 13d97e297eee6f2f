import XCTest
import Glibc
import Posix
@testable import VhostUser

final class GuestMemoryTests: XCTestCase {
    private func memfd(_ size: Int64, fill: [UInt8] = []) throws -> Int32 {
        let fd = try Sys.memfdCreate("region")
        try Sys.ftruncate(fd, size)
        if !fill.isEmpty { _ = fill.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } }
        return fd
    }

    func testTranslatesWithinOneRegionAndRejectsEverythingElse() throws {
        let a = try memfd(0x2000), b = try memfd(0x1000)
        defer { Sys.close(a); Sys.close(b) }
        let memory = try GuestMemory(regions: [
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x2000, userspaceAddress: 0x10000, mmapOffset: 0),
            MemoryRegionDescription(guestPhysicalAddress: 0x2000, size: 0x1000, userspaceAddress: 0x90000, mmapOffset: 0),
        ], fds: [a, b])
        XCTAssertNotNil(memory.translate(guestAddress: 0, length: 0x2000))
        XCTAssertNotNil(memory.translate(guestAddress: 0x2fff, length: 1))
        XCTAssertNil(memory.translate(guestAddress: 0x1fff, length: 2), "a range spanning two regions is refused")
        XCTAssertNil(memory.translate(guestAddress: 0x3000, length: 1))
        XCTAssertNil(memory.translate(guestAddress: 0x1000, length: UInt64.max), "length overflow")
        XCTAssertNil(memory.translate(guestAddress: UInt64.max, length: 2), "address overflow")
        XCTAssertNotNil(memory.translate(frontendAddress: 0x90000, length: 0x1000))
        XCTAssertNil(memory.translate(frontendAddress: 0x90000, length: 0x1001))
        XCTAssertNil(memory.translate(frontendAddress: 0x1000, length: 1))
        XCTAssertEqual(memory.translate(guestAddress: 0x2000, length: 1), memory.translate(frontendAddress: 0x90000, length: 1))
    }

    func testUnalignedMmapOffsetIsSliced() throws {
        let page = Sys.pageSize
        var bytes = [UInt8](repeating: 0, count: 2 * page)
        bytes[100] = 0xAB
        let fd = try memfd(Int64(2 * page), fill: bytes)
        defer { Sys.close(fd) }
        let memory = try GuestMemory(regions: [
            MemoryRegionDescription(guestPhysicalAddress: 0x1000, size: UInt64(page), userspaceAddress: 0, mmapOffset: 100),
        ], fds: [fd])
        XCTAssertEqual(memory.translate(guestAddress: 0x1000, length: 1)?.load(as: UInt8.self), 0xAB)
    }

    func testBadRegionsAreRejected() throws {
        let fd = try memfd(0x1000)
        defer { Sys.close(fd) }
        XCTAssertThrowsError(try GuestMemory(regions: [
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 0, userspaceAddress: 0, mmapOffset: 0)], fds: [fd]))
        XCTAssertThrowsError(try GuestMemory(regions: [
            MemoryRegionDescription(guestPhysicalAddress: UInt64.max - 10, size: 0x1000, userspaceAddress: 0, mmapOffset: 0)], fds: [fd]))
        XCTAssertThrowsError(try GuestMemory(regions: [
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x1000, userspaceAddress: 0, mmapOffset: UInt64.max - 5)], fds: [fd]))
        XCTAssertThrowsError(try GuestMemory(regions: [
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x1000, userspaceAddress: 0, mmapOffset: 0),
            MemoryRegionDescription(guestPhysicalAddress: 0x800, size: 0x1000, userspaceAddress: 0x4000, mmapOffset: 0)],
            fds: [fd, fd]), "overlapping regions")
    }

    func testRegionReachingPastTheEndOfItsFileIsRejected() throws {
        // Touching a mapping beyond the end of its file is SIGBUS: refuse the region up front.
        let fd = try memfd(0x1000)
        defer { Sys.close(fd) }
        XCTAssertThrowsError(try GuestMemory(regions: [
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x100000, userspaceAddress: 0, mmapOffset: 0)], fds: [fd]))
        XCTAssertThrowsError(try GuestMemory(regions: [
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x1000, userspaceAddress: 0, mmapOffset: 0x1000)], fds: [fd]))
        XCTAssertThrowsError(try GuestMemory().adding(
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x2000, userspaceAddress: 0, mmapOffset: 0), fd: fd))
        XCTAssertNoThrow(try GuestMemory(regions: [
            MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x800, userspaceAddress: 0, mmapOffset: 0x800)], fds: [fd]))
    }

    func testAddAndRemoveRegions() throws {
        let fd = try memfd(0x1000)
        defer { Sys.close(fd) }
        let r1 = MemoryRegionDescription(guestPhysicalAddress: 0, size: 0x1000, userspaceAddress: 0, mmapOffset: 0)
        let r2 = MemoryRegionDescription(guestPhysicalAddress: 0x1000, size: 0x1000, userspaceAddress: 0x1000, mmapOffset: 0)
        let one = try GuestMemory().adding(r1, fd: fd)
        let two = try one.adding(r2, fd: fd)
        XCTAssertNotNil(two.translate(guestAddress: 0x1800, length: 1))
        let back = try two.removing(r1)
        XCTAssertNil(back.translate(guestAddress: 0x800, length: 1))
        XCTAssertNotNil(back.translate(guestAddress: 0x1800, length: 1))
        XCTAssertNotNil(one.translate(guestAddress: 0x800, length: 1), "older snapshots stay mapped")
        XCTAssertThrowsError(try back.removing(r1))
    }
}

final class ChainReaderWriterTests: XCTestCase {
    /// Three segments of 3, 1 and 4 bytes over one buffer.
    private var buffer = [UInt8](repeating: 0, count: 8)
    private var segments = UnsafeMutableBufferPointer<iovec>.allocate(capacity: 3)

    override func setUp() {
        buffer = Array(0..<8)
    }

    override func tearDown() { segments.deallocate() }

    private func withSegments(_ body: (UnsafeMutablePointer<iovec>) throws -> Void) rethrows {
        try buffer.withUnsafeMutableBytes { raw in
            let base = raw.baseAddress!
            segments[0] = iovec(iov_base: base, iov_len: 3)
            segments[1] = iovec(iov_base: base + 3, iov_len: 1)
            segments[2] = iovec(iov_base: base + 4, iov_len: 4)
            try body(segments.baseAddress!)
        }
    }

    func testReaderIOVecsCoverExactlyTheRequestedBytesAndRestoreSegments() {
        withSegments { s in
            var reader = ChainReader(segments: s, count: 3, total: 8)
            XCTAssertTrue(reader.skip(2))
            let result = reader.withIOVecs(count: 4) { iov -> Int in
                XCTAssertEqual(iov.map(\.iov_len), [1, 1, 2])
                XCTAssertEqual(iov[0].iov_base?.load(as: UInt8.self), 2)
                return 3
            }
            XCTAssertEqual(result, 3)
            XCTAssertEqual(reader.remaining, 3)
            XCTAssertEqual(s[0].iov_len, 3, "patched segments are restored")
            XCTAssertEqual(s[2].iov_len, 4)
            var rest = [UInt8](repeating: 0, count: 3)
            XCTAssertTrue(rest.withUnsafeMutableBytes { reader.read(into: $0) })
            XCTAssertEqual(rest, [5, 6, 7])
            XCTAssertNil(reader.withIOVecs(count: 1) { _ in 1 })
            XCTAssertFalse(reader.skip(1))
            XCTAssertFalse(reader.skip(-1))
        }
    }

    func testReaderIOVecsClampWhatBodyReturns() {
        withSegments { s in
            var reader = ChainReader(segments: s, count: 3, total: 8)
            XCTAssertEqual(reader.withIOVecs(count: 2) { _ in 99 }, 2)
            XCTAssertEqual(reader.withIOVecs(count: 2) { _ in -5 }, 0)
            XCTAssertEqual(reader.remaining, 6)
        }
    }

    func testWriterIOVecsClampWhatBodyReturns() {
        withSegments { s in
            var writer = ChainWriter(segments: s, count: 3, total: 8)
            XCTAssertEqual(writer.withIOVecs(count: 2) { _ in 99 }, 2)
            XCTAssertEqual(writer.withIOVecs(count: 2) { _ in -5 }, 0)
            XCTAssertEqual(writer.written, 2)
        }
    }

    func testReaderIOVecsDoNotAdvanceWhenBodyThrows() {
        struct Boom: Error {}
        try? withSegments { s in
            var reader = ChainReader(segments: s, count: 3, total: 8)
            XCTAssertThrowsError(try reader.withIOVecs(count: 5) { _ throws(Boom) -> Int in throw Boom() })
            XCTAssertEqual(reader.remaining, 8)
            XCTAssertEqual(s[0].iov_len, 3)
        }
    }

    func testWriterWritesAcrossSegmentsAndOverwritesOnlyWrittenBytes() {
        withSegments { s in
            var writer = ChainWriter(segments: s, count: 3, total: 8)
            XCTAssertTrue([UInt8](repeating: 9, count: 5).withUnsafeBytes { writer.write($0) })
            XCTAssertEqual(writer.written, 5)
            XCTAssertFalse([UInt8](repeating: 1, count: 4).withUnsafeBytes { writer.write($0) }, "does not fit")
            XCTAssertEqual(writer.written, 5)
            XCTAssertTrue([UInt8]([7, 7]).withUnsafeBytes { writer.overwrite($0, at: 2) })
            XCTAssertFalse([UInt8]([7, 7]).withUnsafeBytes { writer.overwrite($0, at: 4) }, "beyond the cursor")
            XCTAssertFalse([UInt8]([7]).withUnsafeBytes { writer.overwrite($0, at: -1) })
            let filled = writer.withIOVecs(count: 3) { iov -> Int in
                XCTAssertEqual(iov.map(\.iov_len), [3])
                return 3
            }
            XCTAssertEqual(filled, 3)
            XCTAssertEqual(writer.written, 8)
            XCTAssertNil(writer.withIOVecs(count: 1) { _ in 1 })
        }
        XCTAssertEqual(Array(buffer[0..<5]), [9, 9, 7, 7, 9])
    }
}
