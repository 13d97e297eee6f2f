import XCTest
import Foundation
import Glibc
import Synchronization
import Posix
@testable import VhostUser

/// Echoes like `EchoHandler` and records which thread handled each chain.
final class ThreadLog: Sendable {
    let threads = Mutex<[pthread_t]>([])
}

struct RecordingEchoHandler: VirtqueueHandler {
    let log: ThreadLog
    func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32 {
        log.threads.withLock { $0.append(pthread_self()) }
        return EchoHandler().handle(queueIndex: queueIndex, reader: &reader, writer: &writer)
    }
}

final class WorkerPoolTests: XCTestCase {
    private func makeWorker(ring: FakeRing, pool: WorkerPool?, log: ThreadLog, kick: Int32, call: Int32,
                            eventIndex: Bool = false) throws -> QueueWorker<RecordingEchoHandler> {
        try QueueWorker(queueIndex: 1, queue: ring.makeQueue(eventIndex: eventIndex), kickFD: kick, callFD: call,
                        handler: RecordingEchoHandler(log: log), logger: .discarding, pool: pool, poolThreshold: 4)
    }

    /// Chain i reads 1 byte (the value i) and may write 16 bytes at its own place.
    private func layChains(_ ring: FakeRing, count: Int) {
        for i in 0..<count {
            let input = ring.dataArea + UInt64(i) * 0x100
            ring.guest.write([UInt8(i)], at: input)
            ring.setDescriptor(2 * i, address: input, length: 1, flags: 1, next: UInt16(2 * i + 1))
            ring.setDescriptor(2 * i + 1, address: input + 0x80, length: 16, flags: 2)
            ring.makeAvailable(UInt16(2 * i))
        }
    }

    func testManyPendingChainsRunOnThePoolAndAreAllPushedAndNotified() throws {
        let ring = FakeRing(guest: try FakeGuest(), size: 32)
        let pool = try WorkerPool(size: 2)
        defer { pool.shutdown() }
        let log = ThreadLog()
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        let worker = try makeWorker(ring: ring, pool: pool, log: log, kick: kick, call: call)
        layChains(ring, count: 10)
        worker.processBatch()
        XCTAssertEqual(ring.usedIndex, 10)
        // In the order the pool finished them: every chain once, each with its own reply.
        XCTAssertEqual(Set((0..<10).map { ring.usedElement($0).id }), Set((0..<10).map { UInt32(2 * $0) }))
        for i in 0..<10 {
            XCTAssertEqual(ring.usedElement(i).length, 2)
            XCTAssertEqual(ring.guest.read(2, at: ring.dataArea + UInt64(i) * 0x100 + 0x80), [1, UInt8(i)])
        }
        let threads = log.threads.withLock { $0 }
        XCTAssertEqual(threads.count, 10)
        XCTAssertFalse(threads.contains { pthread_equal($0, pthread_self()) != 0 }, "handled on pool threads")
        let notifications = try Sys.eventfdDrain(call)
        XCTAssertGreaterThanOrEqual(notifications, 1)
        XCTAssertLessThanOrEqual(notifications, 10, "at most one per chain, coalesced while more are ready")
    }

    func testAChainFinishedOnThePoolIsReturnedWhileASlowerOneStillRuns() throws {
        /// Chain 0 (input byte 0) waits until released; the others echo at once.
        final class SlowFirst: VirtqueueHandler, @unchecked Sendable {
            let release = DispatchSemaphore(value: 0)
            func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32 {
                var first: UInt8 = 0xff
                _ = withUnsafeMutableBytes(of: &first) { reader.read(into: $0) }
                if first == 0 { _ = release.wait(timeout: .now() + 20) }
                _ = withUnsafeBytes(of: first) { writer.write($0) }
                return UInt32(writer.written)
            }
        }
        let ring = FakeRing(guest: try FakeGuest(), size: 32)
        let pool = try WorkerPool(size: 2)
        defer { pool.shutdown() }
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        let handler = SlowFirst()
        let worker = try QueueWorker(queueIndex: 1, queue: ring.makeQueue(), kickFD: kick, callFD: call,
                                     handler: handler, logger: .discarding, pool: pool, poolThreshold: 2)
        layChains(ring, count: 2)
        let finished = DispatchSemaphore(value: 0)
        Thread {
            worker.processBatch()
            finished.signal()
        }.start()
        // The fast chain comes back, and the driver hears of it, while the slow one still runs.
        let revents = try Sys.pollReadable([call], timeoutMilliseconds: 10_000)
        XCTAssertNotEqual(revents[0], 0, "notified before the slow chain finished")
        XCTAssertEqual(ring.usedIndex, 1)
        XCTAssertEqual(ring.usedElement(0).id, 2)
        handler.release.signal()
        XCTAssertEqual(finished.wait(timeout: .now() + 20), .success)
        XCTAssertEqual(ring.usedIndex, 2)
        XCTAssertEqual(ring.usedElement(1).id, 0)
    }

    func testFewPendingChainsAreHandledInline() throws {
        let ring = FakeRing(guest: try FakeGuest(), size: 32)
        let pool = try WorkerPool(size: 2)
        defer { pool.shutdown() }
        let log = ThreadLog()
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        let worker = try makeWorker(ring: ring, pool: pool, log: log, kick: kick, call: call)
        layChains(ring, count: 3)
        worker.processBatch()
        XCTAssertEqual(ring.usedIndex, 3)
        let threads = log.threads.withLock { $0 }
        XCTAssertEqual(threads.count, 3)
        XCTAssertTrue(threads.allSatisfy { pthread_equal($0, pthread_self()) != 0 }, "handled on the queue thread")
    }

    func testPoolPathReturnsMalformedChainsAndArmsEventIndex() throws {
        let ring = FakeRing(guest: try FakeGuest(), size: 32)
        let pool = try WorkerPool(size: 3)
        defer { pool.shutdown() }
        let log = ThreadLog()
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        let worker = try makeWorker(ring: ring, pool: pool, log: log, kick: kick, call: call, eventIndex: true)
        layChains(ring, count: 6)
        ring.setDescriptor(20, address: 0x10, length: 4)  // outside memory
        ring.makeAvailable(20)
        worker.processBatch()
        XCTAssertEqual(ring.usedIndex, 7)
        XCTAssertEqual(worker.malformedChains, 1)
        XCTAssertEqual(ring.availableEvent, 7)
        XCTAssertEqual((0..<7).map { ring.usedElement($0).length }.filter { $0 == 0 }.count, 1)
    }

    func testPoolPathClampsUsedLengthToWritableBytes() throws {
        struct Liar: VirtqueueHandler {
            func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32 { 1 << 30 }
        }
        let ring = FakeRing(guest: try FakeGuest(), size: 32)
        let pool = try WorkerPool(size: 2)
        defer { pool.shutdown() }
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        let worker = try QueueWorker(queueIndex: 1, queue: ring.makeQueue(), kickFD: kick, callFD: call,
                                     handler: Liar(), logger: .discarding, pool: pool, poolThreshold: 4)
        layChains(ring, count: 6)
        worker.processBatch()
        XCTAssertEqual(ring.usedIndex, 6)
        XCTAssertEqual((0..<6).map { ring.usedElement($0).length }, Array(repeating: 16, count: 6),
                       "a handler claiming more than the chain's 16 writable bytes is not believed")
    }

    func testBackendWithPoolServesARequestQueue() throws {
        let guest = try FakeGuest()
        let ring = FakeRing(guest: guest, size: 16)
        var configuration = BackendConfiguration(numRequestQueues: 1, maxQueueSize: 256)
        configuration.threadPoolSize = 2
        let serving = try ServingBackend(configuration: configuration)
        let f = serving.frontend
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        f.send(.setFeatures, payload: le(VirtioFeatures.version1 | VirtioFeatures.protocolFeatures))
        f.send(.setProtocolFeatures, payload: le(ProtocolFeatures.replyAck))
        f.send(.setMemTable, payload: le(UInt32(1)) + le(UInt32(0)) + regionPayload(guest.region), fds: [guest.fd])
        let a = ring.addresses
        f.send(.setVringNum, payload: le(UInt32(1)) + le(UInt32(16)))
        f.send(.setVringAddr, payload: le(UInt32(1)) + le(UInt32(0)) + le(a.descriptorTable) + le(a.usedRing) + le(a.availableRing) + le(UInt64(0)))
        f.send(.setVringKick, payload: le(UInt64(1)), fds: [kick])
        f.send(.setVringCall, payload: le(UInt64(1)), fds: [call])
        layChains(ring, count: 6)
        f.send(.setVringEnable, needReply: true, payload: le(UInt32(1)) + le(UInt32(1)))
        XCTAssertEqual(f.receiveU64(.setVringEnable), 0)
        // The queue thread drains what is already available as it starts; the driver
        // hears of chains as the pool finishes them, so possibly more than once.
        for _ in 0..<6 where ring.usedIndex < 6 {
            XCTAssertTrue(waitReadable(call))
            _ = try? Sys.eventfdDrain(call)
        }
        XCTAssertEqual(ring.usedIndex, 6)
        _ = Glibc.shutdown(f.socket, Int32(SHUT_WR))
        serving.waitFinished()
    }

    func testChainsLeftPendingByABoundedDrainAreServedWithoutAKickWhenSpinningIsOff() throws {
        // Each handled chain makes another available (no kick), so one drain stops at a
        // ring's worth with chains pending; the thread must serve them even when it no
        // longer spins before sleeping (it once slept with them pending).
        final class Reposter: VirtqueueHandler, @unchecked Sendable {
            let ring: FakeRing
            let total: Int
            var handled = 0
            init(_ ring: FakeRing, total: Int) { self.ring = ring; self.total = total }
            func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32 {
                handled += 1
                if handled < total { ring.makeAvailable(0) }
                return 0
            }
        }
        let ring = FakeRing(guest: try FakeGuest(), size: 8)
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        let handler = Reposter(ring, total: 40)
        let worker = try QueueWorker(queueIndex: 1, queue: ring.makeQueue(), kickFD: kick, callFD: call,
                                     handler: handler, logger: .discarding)
        worker.spin = .off
        ring.setDescriptor(0, address: ring.dataArea, length: 8, flags: 2)
        ring.makeAvailable(0)
        try worker.start()
        defer { worker.stop() }
        let deadline = Sys.monotonicNanoseconds() + 10_000_000_000
        while ring.usedIndex < 40 && Sys.monotonicNanoseconds() < deadline { usleep(1000) }
        XCTAssertEqual(ring.usedIndex, 40)
    }
}
