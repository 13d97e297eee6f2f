import XCTest
import Posix
@testable import VhostUserFrontend

/// The driver side of the ring, checked by playing the device by hand (no daemon).
final class SplitQueueDriverTests: XCTestCase {
    private func makeQueue(size: UInt16 = 8, eventIndex: Bool = false) throws -> (GuestMemory, SplitQueue) {
        let memory = try GuestMemory(size: 1 << 20)
        return (memory, try SplitQueue(index: 1, size: size, memory: memory, eventIndex: eventIndex))
    }

    private func descriptor(_ q: SplitQueue, _ i: UInt16) -> (UInt64, UInt32, UInt16, UInt16) {
        let p = q.descriptors.pointer + 16 * Int(i)
        return (p.loadUnaligned(as: UInt64.self), p.loadUnaligned(fromByteOffset: 8, as: UInt32.self),
                p.loadUnaligned(fromByteOffset: 12, as: UInt16.self), p.loadUnaligned(fromByteOffset: 14, as: UInt16.self))
    }

    /// The device's side of completing a chain.
    private func complete(_ q: SplitQueue, head: UInt16, length: UInt32) {
        let usedIdx = q.used.pointer.loadUnaligned(fromByteOffset: 2, as: UInt16.self)
        let entry = q.used.pointer + 4 + 8 * Int(usedIdx % q.size)
        entry.storeBytes(of: UInt32(head), as: UInt32.self)
        entry.storeBytes(of: length, toByteOffset: 4, as: UInt32.self)
        q.used.pointer.storeBytes(of: usedIdx &+ 1, toByteOffset: 2, as: UInt16.self)
    }

    func testChainIsLinkedReadableFirstAndPublishedOnTheAvailRing() throws {
        let (memory, q) = try makeQueue()
        let a = try memory.allocate(100), b = try memory.allocate(200)
        let head = try q.submit(readable: [a], writable: [b])
        let first = descriptor(q, head)
        XCTAssertEqual(first.0, a.guestAddress)
        XCTAssertEqual(first.1, 100)
        XCTAssertEqual(first.2, SplitQueue.flagNext)
        let second = descriptor(q, first.3)
        XCTAssertEqual(second.0, b.guestAddress)
        XCTAssertEqual(second.1, 200)
        XCTAssertEqual(second.2, SplitQueue.flagWrite)
        XCTAssertEqual(q.available.pointer.loadUnaligned(fromByteOffset: 2, as: UInt16.self), 1, "avail.idx")
        XCTAssertEqual(q.available.pointer.loadUnaligned(fromByteOffset: 4, as: UInt16.self), head, "avail.ring[0]")
        XCTAssertEqual(q.freeDescriptors, 6)
    }

    func testReapingAUsedEntryReportsLengthAndFreesTheChain() throws {
        let (memory, q) = try makeQueue()
        let head = try q.submit(readable: [try memory.allocate(10)], writable: [try memory.allocate(10), try memory.allocate(10)])
        XCTAssertEqual(q.reap { _ in XCTFail("nothing is used yet") }, 0)
        complete(q, head: head, length: 7)
        var seen: [UsedElement] = []
        q.reap { seen.append($0) }
        XCTAssertEqual(seen, [UsedElement(head: head, length: 7)])
        XCTAssertEqual(q.freeDescriptors, 8)
        XCTAssertEqual(q.inFlight, 0)
    }

    func testIndirectChainTakesOneSlotAndPointsAtItsTable() throws {
        let (memory, q) = try makeQueue()
        let head = try q.submit(readable: [try memory.allocate(10), try memory.allocate(10)],
                                writable: [try memory.allocate(10)], indirect: true)
        let entry = descriptor(q, head)
        XCTAssertEqual(entry.2, SplitQueue.flagIndirect)
        XCTAssertEqual(entry.1, 48, "three 16-byte entries")
        let table = memory.pointer(guestAddress: entry.0, count: 48)
        XCTAssertNotNil(table)
        XCTAssertEqual(table?.loadUnaligned(fromByteOffset: 32 + 12, as: UInt16.self), SplitQueue.flagWrite)
        XCTAssertEqual(q.freeDescriptors, 7)
        complete(q, head: head, length: 0)
        q.reap { _ in }
        XCTAssertEqual(q.freeDescriptors, 8)
    }

    func testFullRingRefusesInsteadOfOverwriting() throws {
        let (memory, q) = try makeQueue(size: 4)
        let buffer = try memory.allocate(8)
        for _ in 0..<2 { try q.submit(readable: [buffer], writable: [buffer]) }
        XCTAssertThrowsError(try q.submit(readable: [buffer], writable: [buffer]))
    }

    func testEventIndexKicksOnlyWhenTheDeviceAskedForThisIndex() throws {
        let (memory, q) = try makeQueue(eventIndex: true)
        let buffer = try memory.allocate(8)
        // avail_event = 0: the device wants a kick once chain 0 is published.
        try q.submit(readable: [buffer], writable: [])
        XCTAssertEqual(q.kicks, 1)
        // The device has not moved avail_event: it is still processing and will see chain 1 itself.
        try q.submit(readable: [buffer], writable: [])
        XCTAssertEqual(q.kicks, 1)
        // Now it asks to be told about index 2.
        q.used.pointer.storeBytes(of: UInt16(2), toByteOffset: 4 + 8 * Int(q.size), as: UInt16.self)
        try q.submit(readable: [buffer], writable: [])
        XCTAssertEqual(q.kicks, 2)
    }

    func testWithoutEventIndexTheNoNotifyFlagSuppressesKicks() throws {
        let (memory, q) = try makeQueue()
        let buffer = try memory.allocate(8)
        try q.submit(readable: [buffer], writable: [])
        XCTAssertEqual(q.kicks, 1)
        q.used.pointer.storeBytes(of: UInt16(1), as: UInt16.self)  // VRING_USED_F_NO_NOTIFY
        try q.submit(readable: [buffer], writable: [])
        XCTAssertEqual(q.kicks, 1)
    }

    func testArmingPublishesUsedEventAndSeesPendingEntries() throws {
        let (memory, q) = try makeQueue(eventIndex: true)
        let head = try q.submit(readable: [try memory.allocate(8)], writable: [])
        XCTAssertFalse(q.armForCall())
        complete(q, head: head, length: 0)
        XCTAssertTrue(q.armForCall(), "an entry is waiting, so the caller must not sleep")
        q.reap { _ in }
        _ = q.armForCall()
        XCTAssertEqual(q.available.pointer.loadUnaligned(fromByteOffset: 4 + 2 * Int(q.size), as: UInt16.self), 1,
                       "used_event asks for a call on the next entry")
    }

    func testGuestMemoryAllocatorStaysInsideTheRegion() throws {
        let memory = try GuestMemory(size: 8192)
        let a = try memory.allocate(100, alignment: 4096)
        XCTAssertEqual(a.guestAddress, 0)
        let b = try memory.allocate(100, alignment: 4096)
        XCTAssertEqual(b.guestAddress, 4096)
        XCTAssertThrowsError(try memory.allocate(4096))
        XCTAssertNil(memory.pointer(guestAddress: 8000, count: 500))
        XCTAssertNil(memory.pointer(guestAddress: UInt64.max, count: 2))
        XCTAssertNotNil(memory.pointer(guestAddress: 8000, count: 192))
    }
}
