import XCTest
import Glibc
import Synchronization
import Posix
@testable import VhostUser

/// Detaches every chain whose first request byte is odd and keeps its late
/// reply destination by that byte; echoes the others.
final class DetachingHandler: VirtqueueHandler, @unchecked Sendable {
    let destinations = Mutex<[UInt8: any LateReplyDestination]>([:])
    func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32 {
        var first: UInt8 = 0
        _ = withUnsafeMutableBytes(of: &first) { reader.read(into: $0) }
        if first % 2 == 1, let destination = writer.detachReply() {
            destinations.withLock { $0[first] = destination }
            // Whatever is claimed here, a detached chain is not pushed now.
            return 99
        }
        _ = withUnsafeBytes(of: first) { writer.write($0) }
        return UInt32(writer.written)
    }

    func destination(_ key: UInt8) -> (any LateReplyDestination)? { destinations.withLock { $0[key] } }
}

final class LateReplyTests: XCTestCase {
    var guest: FakeGuest!
    var ring: FakeRing!

    override func setUp() {
        guest = try! FakeGuest()
        ring = FakeRing(guest: guest, size: 16)
    }

    /// Chain i: reads one byte (`value`) at its own place, may write 32 bytes after it; head 2i.
    func layChain(_ i: Int, value: UInt8) {
        let input = ring.dataArea + UInt64(i) * 0x100
        guest.write([value], at: input)
        ring.setDescriptor(2 * i, address: input, length: 1, flags: 1, next: UInt16(2 * i + 1))
        ring.setDescriptor(2 * i + 1, address: input + 0x80, length: 32, flags: 2)
        ring.makeAvailable(UInt16(2 * i))
    }

    func output(_ i: Int, _ count: Int) -> [UInt8] { guest.read(count, at: ring.dataArea + UInt64(i) * 0x100 + 0x80) }

    func testDetachedChainsCompleteLaterInAnyOrder() throws {
        let handler = DetachingHandler()
        let worker = try ring.makeWorker(handler)
        layChain(0, value: 1)
        layChain(1, value: 2)
        layChain(2, value: 3)
        worker.processBatch()
        XCTAssertEqual(ring.usedIndex, 1, "only the chain answered now is used")
        XCTAssertEqual(ring.usedElement(0).id, 2)
        // The last detached answers first.
        XCTAssertEqual(([0xC3, 0xC3, 0xC3] as [UInt8]).withUnsafeBytes { handler.destination(3)?.send($0) }, true)
        XCTAssertEqual(([0xA1, 0xA1] as [UInt8]).withUnsafeBytes { handler.destination(1)?.send($0) }, true)
        XCTAssertEqual(ring.usedIndex, 1, "only the queue thread pushes")
        worker.processBatch(lateReplies: true)
        XCTAssertEqual(ring.usedIndex, 3)
        XCTAssertEqual(ring.usedElement(1).id, 4)
        XCTAssertEqual(ring.usedElement(1).length, 3)
        XCTAssertEqual(ring.usedElement(2).id, 0)
        XCTAssertEqual(ring.usedElement(2).length, 2)
        XCTAssertEqual(output(2, 3), [0xC3, 0xC3, 0xC3])
        XCTAssertEqual(output(0, 2), [0xA1, 0xA1])
        XCTAssertEqual(([1] as [UInt8]).withUnsafeBytes { handler.destination(1)?.send($0) }, false, "one reply per chain")
    }

    func testRunningQueueThreadPushesALateReplyAndNotifies() throws {
        let handler = DetachingHandler()
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        let worker = try QueueWorker(queueIndex: 1, queue: ring.makeQueue(), kickFD: kick, callFD: call,
                                     handler: handler, logger: .discarding)
        try worker.start()
        defer { worker.stop() }
        layChain(0, value: 5)
        try Sys.eventfdSignal(kick)
        var destination: (any LateReplyDestination)?
        for _ in 0..<10_000 where destination == nil {
            destination = handler.destination(5)
            usleep(1000)
        }
        XCTAssertEqual(([7, 7, 7, 7] as [UInt8]).withUnsafeBytes { destination?.send($0) }, true)
        let revents = try Sys.pollReadable([call], timeoutMilliseconds: 10_000)
        XCTAssertNotEqual(revents[0], 0, "the driver is notified")
        XCTAssertEqual(ring.usedIndex, 1)
        XCTAssertEqual(ring.usedElement(0).id, 0)
        XCTAssertEqual(ring.usedElement(0).length, 4)
        XCTAssertEqual(output(0, 4), [7, 7, 7, 7])
    }

    func testReplyIsWrittenThroughTheMemoryTableInForceWhenItComes() throws {
        let handler = DetachingHandler()
        let replies = try LateReplies()
        let first = try ring.makeWorker(handler, replies: replies)
        layChain(0, value: 1)
        layChain(1, value: 3)
        first.processBatch()
        // A new table maps the same memory again (new host addresses); the queue thread restarts on it.
        let remapped = try GuestMemory(regions: [guest.region], fds: [guest.fd])
        let rings = try RingPointers(ring.addresses, size: ring.size, memory: remapped, queue: 1)
        let queue = SplitQueue(size: ring.size, rings: rings, memory: remapped, eventIndex: false, indirect: true,
                               lastAvailable: first.queue.lastAvailable, nextUsed: first.queue.nextUsed)
        let second = try QueueWorker(queueIndex: 1, queue: queue, kickFD: -1, callFD: nil, replies: replies,
                                     handler: handler, logger: .discarding)
        XCTAssertEqual(([0x11] as [UInt8]).withUnsafeBytes { handler.destination(1)?.send($0) }, true)
        second.processBatch(lateReplies: true)
        XCTAssertEqual(ring.usedIndex, 1)
        XCTAssertEqual(output(0, 1), [0x11])
        // A table without the buffer's guest address: the chain comes back empty, nothing is written.
        var moved = guest.region
        moved.guestPhysicalAddress += 0x1000_0000
        let elsewhere = try GuestMemory(regions: [moved], fds: [guest.fd])
        let movedRings = try RingPointers(ring.addresses, size: ring.size, memory: elsewhere, queue: 1)
        let third = try QueueWorker(queueIndex: 1, queue: SplitQueue(size: ring.size, rings: movedRings, memory: elsewhere,
                                                                     eventIndex: false, indirect: true,
                                                                     lastAvailable: second.queue.lastAvailable,
                                                                     nextUsed: second.queue.nextUsed),
                                    kickFD: -1, callFD: nil, replies: replies, handler: handler, logger: .discarding)
        XCTAssertEqual(([0x33] as [UInt8]).withUnsafeBytes { handler.destination(3)?.send($0) }, true)
        third.processBatch(lateReplies: true)
        XCTAssertEqual(ring.usedIndex, 2)
        XCTAssertEqual(ring.usedElement(1).id, 2)
        XCTAssertEqual(ring.usedElement(1).length, 0)
        XCTAssertEqual(output(1, 1), [0])
    }

    func testClosedQueueRefusesLateRepliesAndOversizedRepliesAreRefused() throws {
        let handler = DetachingHandler()
        let replies = try LateReplies()
        let worker = try ring.makeWorker(handler, replies: replies)
        layChain(0, value: 1)
        layChain(1, value: 3)
        worker.processBatch()
        let tooBig = [UInt8](repeating: 1, count: 33)
        XCTAssertEqual(tooBig.withUnsafeBytes { handler.destination(3)?.send($0) }, false, "larger than the chain's buffers")
        replies.close()
        XCTAssertEqual(([1] as [UInt8]).withUnsafeBytes { handler.destination(1)?.send($0) }, false, "the queue is gone")
        worker.processBatch(lateReplies: true)
        XCTAssertEqual(ring.usedIndex, 0)
    }

    func testDetachedChainOnThePoolIsNotPushedUntilItsReply() throws {
        let handler = DetachingHandler()
        let pool = try WorkerPool(size: 2)
        defer { pool.shutdown() }
        let worker = try QueueWorker(queueIndex: 1, queue: ring.makeQueue(), kickFD: -1, callFD: nil,
                                     handler: handler, logger: .discarding, pool: pool, poolThreshold: 2)
        for i in 0..<6 { layChain(i, value: UInt8(i)) }
        worker.processBatch()
        XCTAssertEqual(ring.usedIndex, 3, "the three even chains")
        for key: UInt8 in [5, 3, 1] {
            XCTAssertEqual(([key] as [UInt8]).withUnsafeBytes { handler.destination(key)?.send($0) }, true)
        }
        worker.processBatch(lateReplies: true)
        XCTAssertEqual(ring.usedIndex, 6)
        XCTAssertEqual((3..<6).map { ring.usedElement($0).id }, [10, 6, 2])
    }
}
