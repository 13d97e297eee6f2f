import XCTest
import Glibc
import Posix
@testable import VhostUser

final class VirtqueueTests: XCTestCase {
    var guest: FakeGuest!
    var ring: FakeRing!

    override func setUpWithError() throws {
        guest = try FakeGuest()
        ring = FakeRing(guest: guest, size: 8)
    }

    private func data(_ n: Int) -> UInt64 { ring.dataArea + UInt64(n) * 0x1000 }

    func testPopsReadableThenWritableSegmentsAndReaderCrossesThem() throws {
        var q = try ring.makeQueue()
        guest.write([1, 2, 3], at: data(0))
        guest.write([4, 5], at: data(1))
        ring.setDescriptor(3, address: data(0), length: 3, flags: 1, next: 5)
        ring.setDescriptor(5, address: data(1), length: 2, flags: 1, next: 6)
        ring.setDescriptor(6, address: data(2), length: 10, flags: 2)
        ring.makeAvailable(3)
        let result = try q.pop()
        XCTAssertEqual(result, .chain(head: 3, readableSegments: 2, readableBytes: 5, writableSegments: 1, writableBytes: 10))
        var reader = ChainReader(segments: q.storage.baseAddress!, count: 2, total: 5)
        var bytes = [UInt8](repeating: 0, count: 4)
        XCTAssertTrue(bytes.withUnsafeMutableBytes { reader.read(into: $0) })
        XCTAssertEqual(bytes, [1, 2, 3, 4])
        XCTAssertEqual(reader.remaining, 1)
        XCTAssertFalse(bytes.withUnsafeMutableBytes { reader.read(into: $0) }, "more than remains fails")
        XCTAssertEqual(reader.remaining, 1, "and consumes nothing")
        XCTAssertEqual(try q.pop(), .empty)
    }

    func testIndirectTableIsWalked() throws {
        var q = try ring.makeQueue()
        let table = data(10)
        ring.setDescriptor(0, address: data(0), length: 4, flags: 1, next: 1, table: table)
        ring.setDescriptor(1, address: data(1), length: 8, flags: 2, table: table)
        ring.setDescriptor(2, address: table, length: 32, flags: 4)
        ring.makeAvailable(2)
        XCTAssertEqual(try q.pop(), .chain(head: 2, readableSegments: 1, readableBytes: 4, writableSegments: 1, writableBytes: 8))
    }

    func testMalformedChains() throws {
        let table = data(10)
        let cases: [(String, () -> Void, ChainError)] = [
            ("address outside memory", {
                self.ring.setDescriptor(0, address: FakeGuest.guestBase + self.guest.size - 2, length: 4)
            }, .bufferOutsideMemory(address: FakeGuest.guestBase + guest.size - 2, length: 4)),
            ("address below memory", { self.ring.setDescriptor(0, address: 0x1000, length: 4) },
             .bufferOutsideMemory(address: 0x1000, length: 4)),
            ("address wrapping u64", { self.ring.setDescriptor(0, address: UInt64.max - 1, length: 16) },
             .bufferOutsideMemory(address: UInt64.max - 1, length: 16)),
            ("descriptor loop", {
                self.ring.setDescriptor(0, address: self.data(0), length: 1, flags: 1, next: 1)
                self.ring.setDescriptor(1, address: self.data(0), length: 1, flags: 1, next: 0)
            }, .chainTooLong),
            ("descriptor loop of empty buffers (only the time to live ends it)", {
                self.ring.setDescriptor(0, address: self.data(0), length: 0, flags: 1, next: 1)
                self.ring.setDescriptor(1, address: self.data(0), length: 0, flags: 1, next: 0)
            }, .chainTooLong),
            ("next out of range", { self.ring.setDescriptor(0, address: self.data(0), length: 1, flags: 1, next: 8) },
             .descriptorIndexOutOfRange(8)),
            ("readable after writable", {
                self.ring.setDescriptor(0, address: self.data(0), length: 1, flags: 3, next: 1)
                self.ring.setDescriptor(1, address: self.data(0), length: 1)
            }, .readableAfterWritable),
            ("indirect length not a multiple of 16", { self.ring.setDescriptor(0, address: table, length: 24, flags: 4) },
             .indirectBadLength(24)),
            ("indirect length zero", { self.ring.setDescriptor(0, address: table, length: 0, flags: 4) },
             .indirectBadLength(0)),
            ("indirect table outside memory", { self.ring.setDescriptor(0, address: 0x10, length: 32, flags: 4) },
             .bufferOutsideMemory(address: 0x10, length: 32)),
            ("indirect table longer than any chain we accept", {
                self.ring.setDescriptor(0, address: table, length: 16 * 1025, flags: 4)
            }, .chainTooLong),
            ("indirect with next", { self.ring.setDescriptor(0, address: table, length: 32, flags: 5, next: 1) },
             .indirectWithNext),
            ("nested indirect", {
                self.ring.setDescriptor(0, address: table, length: 32, flags: 4, table: table)
                self.ring.setDescriptor(0, address: table, length: 32, flags: 4)
            }, .indirectInIndirect),
            ("loop inside an indirect table", {
                self.ring.setDescriptor(0, address: self.data(0), length: 1, flags: 1, next: 1, table: table)
                self.ring.setDescriptor(1, address: self.data(0), length: 1, flags: 1, next: 0, table: table)
                self.ring.setDescriptor(0, address: table, length: 32, flags: 4)
            }, .chainTooLong),
        ]
        for (name, layout, expected) in cases {
            var q = try ring.makeQueue()
            ring.availableIndex = 0
            layout()
            ring.makeAvailable(0)
            XCTAssertEqual(try q.pop(), .malformed(head: 0, expected), name)
            XCTAssertEqual(try q.pop(), .empty, "\(name): the queue goes on")
        }
    }

    func testIndirectTableLongerThanTheQueueIsAccepted() throws {
        var q = try ring.makeQueue()
        let table = data(10)
        for i in 0..<12 {
            ring.setDescriptor(i, address: data(i), length: 4, flags: i < 11 ? 3 : 2, next: UInt16(i + 1), table: table)
        }
        ring.setDescriptor(0, address: table, length: 16 * 12, flags: 4)
        ring.makeAvailable(0)
        XCTAssertEqual(try q.pop(), .chain(head: 0, readableSegments: 0, readableBytes: 0, writableSegments: 12, writableBytes: 48))
    }

    func testIndirectRejectedWhenNotNegotiated() throws {
        var q = try ring.makeQueue(indirect: false)
        ring.setDescriptor(0, address: data(10), length: 32, flags: 4)
        ring.makeAvailable(0)
        XCTAssertEqual(try q.pop(), .malformed(head: 0, .indirectNotNegotiated))
    }

    func testChainOfExactlyQueueSizeIsAccepted() throws {
        var q = try ring.makeQueue()
        for i in 0..<8 {
            ring.setDescriptor(i, address: data(i), length: 2, flags: i < 7 ? 1 : 0, next: UInt16(i + 1))
        }
        ring.makeAvailable(0)
        XCTAssertEqual(try q.pop(), .chain(head: 0, readableSegments: 8, readableBytes: 16, writableSegments: 0, writableBytes: 0))
    }

    func testAvailableIndexJumpingPastQueueSizeStopsTheQueue() throws {
        var q = try ring.makeQueue()
        ring.setAvailableIndex(9)
        XCTAssertThrowsError(try q.pop()) { error in
            XCTAssertEqual(error as? RingError, .availableIndexJump(available: 9, lastSeen: 0, size: 8))
        }
    }

    func testHeadIndexOutOfRangeStopsTheQueue() throws {
        var q = try ring.makeQueue()
        ring.makeAvailable(8)
        XCTAssertThrowsError(try q.pop()) { error in
            XCTAssertEqual(error as? RingError, .headOutOfRange(head: 8, size: 8))
        }
    }

    func testRingOutsideMemoryIsRejected() throws {
        let a = ring.addresses
        var bad = a
        bad.usedRing = FakeGuest.frontendBase + guest.size - 16
        XCTAssertThrowsError(try RingPointers(bad, size: 8, memory: guest.memory, queue: 1)) { error in
            XCTAssertEqual(error as? VhostUserError,
                           .ringOutsideMemory(queue: 1, ring: "used ring", address: bad.usedRing, length: 70))
        }
        bad = a
        bad.descriptorTable += 8
        XCTAssertThrowsError(try RingPointers(bad, size: 8, memory: guest.memory, queue: 1)) { error in
            XCTAssertEqual(error as? VhostUserError, .ringMisaligned(queue: 1, ring: "descriptor table", address: bad.descriptorTable))
        }
    }

    func testDrainEchoesAndReturnsMalformedChainsWithLengthZero() throws {
        let worker = try ring.makeWorker(EchoHandler())
        guest.write(Array("hello".utf8), at: data(0))
        ring.setDescriptor(0, address: data(0), length: 5, flags: 1, next: 1)
        ring.setDescriptor(1, address: data(1), length: 64, flags: 2)
        ring.setDescriptor(2, address: 0x10, length: 5)   // outside memory
        ring.makeAvailable(0)
        ring.makeAvailable(2)
        worker.processBatch()
        XCTAssertEqual(ring.usedIndex, 2)
        XCTAssertEqual(ring.usedElement(0).id, 0)
        XCTAssertEqual(ring.usedElement(0).length, 6)
        XCTAssertEqual(guest.read(6, at: data(1)), [3] + Array("hello".utf8))
        XCTAssertEqual(ring.usedElement(1).id, 2)
        XCTAssertEqual(ring.usedElement(1).length, 0)
        XCTAssertEqual(worker.malformedChains, 1)
    }

    func testEventIndexSuppressesNotificationUntilUsedEventIsPassed() throws {
        let worker = try ring.makeWorker(EchoHandler(), eventIndex: true)
        ring.setDescriptor(0, address: data(1), length: 8, flags: 2)
        // The driver wants an interrupt only once used.idx passes 1 (i.e., after the 2nd entry).
        ring.setUsedEvent(1)
        ring.makeAvailable(0)
        var before = worker.queue.nextUsed
        worker.processBatch()
        XCTAssertEqual(ring.availableEvent, 1, "avail_event tells the driver where to kick next")
        XCTAssertFalse(worker.queue.needsNotification(since: before))
        ring.makeAvailable(0)
        before = worker.queue.nextUsed
        worker.processBatch()
        XCTAssertTrue(worker.queue.needsNotification(since: before))
        XCTAssertEqual(ring.availableEvent, 2)
    }

    func testNoInterruptFlagSuppressesNotificationWithoutEventIndex() throws {
        let worker = try ring.makeWorker(EchoHandler())
        ring.setDescriptor(0, address: data(1), length: 8, flags: 2)
        ring.makeAvailable(0)
        worker.processBatch()
        XCTAssertTrue(worker.queue.needsNotification(since: 0))
        ring.setAvailableFlags(1)
        XCTAssertFalse(worker.queue.needsNotification(since: 0))
    }

    func testUsedLengthIsClampedToWritableBytes() throws {
        struct Liar: VirtqueueHandler {
            func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32 { 1 << 30 }
        }
        let worker = try ring.makeWorker(Liar())
        ring.setDescriptor(0, address: data(1), length: 8, flags: 2)
        ring.makeAvailable(0)
        worker.processBatch()
        XCTAssertEqual(ring.usedElement(0).length, 8)
    }

    func testDrainOfARingTheDriverNeverLetsGoEmptyReturnsAfterABoundedBatch() throws {
        // A driver that posts a new chain for every one taken keeps the ring non-empty
        // forever; the queue thread must still come up for air to see a stop request.
        final class Reposter: VirtqueueHandler, @unchecked Sendable {
            let ring: FakeRing
            var handled = 0
            init(_ ring: FakeRing) { self.ring = ring }
            func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32 {
                handled += 1
                if handled < 100_000 { ring.makeAvailable(0) }
                return 0
            }
        }
        let handler = Reposter(ring)
        let worker = try ring.makeWorker(handler, eventIndex: true)
        ring.setDescriptor(0, address: data(1), length: 8, flags: 2)
        ring.makeAvailable(0)
        worker.processBatch()
        XCTAssertLessThanOrEqual(handler.handled, ring.size)
        XCTAssertGreaterThan(worker.queue.pendingCount, 0, "the rest waits for the next round")
        XCTAssertEqual(ring.usedIndex, UInt16(truncatingIfNeeded: handler.handled))
    }

    func testDrainOfExactlyOneRingsWorthReturnsOnceTheRingIsEmpty() throws {
        // Taking the most one drain may take and then finding the ring empty ends the
        // drain (it once looped forever there, with nothing left to pop).
        for eventIndex in [false, true] {
            let guest = try FakeGuest()
            let ring = FakeRing(guest: guest, size: 8)
            let worker = try ring.makeWorker(EchoHandler(), eventIndex: eventIndex)
            for i in 0..<8 {
                ring.setDescriptor(i, address: ring.dataArea + UInt64(i) * 64, length: 8, flags: 2)
                ring.makeAvailable(UInt16(i))
            }
            worker.processBatch()
            XCTAssertEqual(ring.usedIndex, 8, "event index \(eventIndex)")
            XCTAssertEqual(worker.queue.pendingCount, 0)
        }
    }

    func testIndicesWrapAround16Bits() throws {
        let worker = try ring.makeWorker(EchoHandler())
        worker.queue.lastAvailable = 0xffff
        worker.queue.nextUsed = 0xffff
        ring.availableIndex = 0xffff
        ring.setDescriptor(0, address: data(1), length: 8, flags: 2)
        ring.makeAvailable(0)
        ring.makeAvailable(0)
        worker.processBatch()
        XCTAssertEqual(ring.usedIndex, 1)
        XCTAssertEqual(worker.queue.lastAvailable, 1)
    }
}
