import XCTest
import Foundation
import Glibc
import Posix
@testable import VhostUser

/// Runs `serve` on its own thread; `finished` is signalled when it returns.
final class ServingBackend: @unchecked Sendable {
    let backend: VhostUserBackend<EchoHandler>
    let frontend: FakeFrontend
    let shutdown: Int32
    let finished = DispatchSemaphore(value: 0)
    // Written by the serving thread before `finished` is signalled.
    var result: Result<Void, VhostUserError> = .success(())

    init(configuration: BackendConfiguration = BackendConfiguration(numRequestQueues: 1, maxQueueSize: 256)) throws {
        let (a, b) = try Sys.unixStreamSocketPair()
        frontend = FakeFrontend(socket: a)
        shutdown = try Sys.eventfd()
        backend = VhostUserBackend(configuration: configuration, handler: EchoHandler(), logger: .discarding)
        let connection = b
        let thread = Thread { [self] in
            do throws(VhostUserError) {
                try backend.serve(connection: connection, shutdownFD: shutdown)
            } catch {
                result = .failure(error)
            }
            finished.signal()
        }
        thread.start()
    }

    /// Waits (bounded) for serve to return.
    func waitFinished(file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(finished.wait(timeout: .now() + 30), .success, "serve returned", file: file, line: line)
    }

    deinit {
        Sys.close(frontend.socket)
        Sys.close(shutdown)
    }
}

final class BackendTests: XCTestCase {
    private let replyAck = ProtocolFeatures.replyAck | ProtocolFeatures.multiQueue | ProtocolFeatures.configureMemorySlots

    /// Negotiates features the way QEMU does and returns the acked virtio features.
    private func negotiate(_ f: FakeFrontend, eventIndex: Bool) {
        f.send(.getFeatures)
        XCTAssertEqual(f.receiveU64(.getFeatures), VirtioFeatures.offered)
        var features = VirtioFeatures.version1 | VirtioFeatures.protocolFeatures | VirtioFeatures.ringIndirectDescriptors
        if eventIndex { features |= VirtioFeatures.ringEventIndex }
        f.send(.setFeatures, payload: le(features))
        f.send(.getProtocolFeatures)
        XCTAssertEqual(f.receiveU64(.getProtocolFeatures), ProtocolFeatures.offered)
        f.send(.setProtocolFeatures, payload: le(replyAck))
        f.send(.setOwner)
        f.send(.getQueueNum)
        XCTAssertEqual(f.receiveU64(.getQueueNum), 2)
        f.send(.getMaxMemSlots)
        XCTAssertEqual(f.receiveU64(.getMaxMemSlots), 32)
    }

    /// Sets up queue `q` on `ring` with kick and call eventfds; the ack proves it was applied.
    private func setUpQueue(_ f: FakeFrontend, _ q: UInt32, ring: FakeRing, kick: Int32, call: Int32) {
        let a = ring.addresses
        f.send(.setVringNum, payload: le(q) + le(UInt32(ring.size)))
        f.send(.setVringBase, payload: le(q) + le(UInt32(0)))
        f.send(.setVringAddr, payload: le(q) + le(UInt32(0)) + le(a.descriptorTable) + le(a.usedRing) + le(a.availableRing) + le(UInt64(0)))
        f.send(.setVringKick, payload: le(UInt64(q)), fds: [kick])
        f.send(.setVringCall, payload: le(UInt64(q)), fds: [call])
        f.send(.setVringEnable, needReply: true, payload: le(q) + le(UInt32(1)))
        XCTAssertEqual(f.receiveU64(.setVringEnable), 0)
    }

    func testHandshakeAndEchoThroughARealQueueThread() throws {
        let guest = try FakeGuest()
        let ring = FakeRing(guest: guest, size: 16)
        let serving = try ServingBackend()
        let f = serving.frontend
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }

        negotiate(f, eventIndex: true)
        f.send(.setMemTable, needReply: true, payload: le(UInt32(1)) + le(UInt32(0)) + regionPayload(guest.region), fds: [guest.fd])
        XCTAssertEqual(f.receiveU64(.setMemTable), 0)
        setUpQueue(f, 1, ring: ring, kick: kick, call: call)
        XCTAssertEqual(serving.backend.runningQueues, [1])

        guest.write(Array("ping".utf8), at: ring.dataArea)
        ring.setDescriptor(0, address: ring.dataArea, length: 4, flags: 1, next: 1)
        ring.setDescriptor(1, address: ring.dataArea + 0x1000, length: 64, flags: 2)
        ring.setUsedEvent(0)
        ring.makeAvailable(0)
        try Sys.eventfdSignal(kick)
        XCTAssertTrue(waitReadable(call), "the queue thread signalled the call eventfd")
        _ = try Sys.eventfdDrain(call)
        XCTAssertEqual(ring.usedIndex, 1)
        XCTAssertEqual(ring.usedElement(0).length, 5)
        XCTAssertEqual(guest.read(5, at: ring.dataArea + 0x1000), [1] + Array("ping".utf8))

        // GET_VRING_BASE stops the queue and reports where it stopped.
        f.send(.getVringBase, payload: le(UInt32(1)) + le(UInt32(0)))
        let reply = f.receive()
        XCTAssertEqual(reply?.0, RequestCode.getVringBase.rawValue)
        XCTAssertEqual(reply?.2, le(UInt32(1)) + le(UInt32(1)))
        XCTAssertEqual(serving.backend.runningQueues, [])

        shutdownWrite(f.socket)
        serving.waitFinished()
        XCTAssertNoThrow(try serving.result.get())
    }

    func testMemoryTableChangeRestartsQueueOnTheNewTable() throws {
        let guest = try FakeGuest()
        let ring = FakeRing(guest: guest, size: 8)
        let serving = try ServingBackend()
        let f = serving.frontend
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        negotiate(f, eventIndex: false)
        f.send(.addMemReg, needReply: true, payload: le(UInt64(0)) + regionPayload(guest.region), fds: [guest.fd])
        XCTAssertEqual(f.receiveU64(.addMemReg), 0)
        setUpQueue(f, 0, ring: ring, kick: kick, call: call)
        XCTAssertEqual(serving.backend.runningQueues, [0])
        // A second region elsewhere: the queue is stopped, the table swapped, the queue restarted.
        let other = try Sys.memfdCreate("other")
        defer { Sys.close(other) }
        try Sys.ftruncate(other, 0x10000)
        let second = MemoryRegionDescription(guestPhysicalAddress: 0x4000_0000, size: 0x10000, userspaceAddress: 0x10_0000_0000, mmapOffset: 0)
        f.send(.addMemReg, needReply: true, payload: le(UInt64(0)) + regionPayload(second), fds: [other])
        XCTAssertEqual(f.receiveU64(.addMemReg), 0)
        XCTAssertEqual(serving.backend.runningQueues, [0])
        ring.setDescriptor(0, address: ring.dataArea, length: 8, flags: 2)
        ring.makeAvailable(0)
        try Sys.eventfdSignal(kick)
        XCTAssertTrue(waitReadable(call))
        XCTAssertEqual(ring.usedIndex, 1)
        // Removing the region the rings live in cannot leave the queue pointing at unmapped memory.
        f.send(.remMemReg, needReply: true, payload: le(UInt64(0)) + regionPayload(guest.region))
        XCTAssertEqual(f.receiveU64(.remMemReg), 1, "the rings are outside the new table")
        XCTAssertNil(f.receive(), "and the connection is closed")
        serving.waitFinished()
    }

    func testSetFeaturesRestartsRunningQueuesWithTheNewRingFeatures() throws {
        let guest = try FakeGuest()
        let ring = FakeRing(guest: guest, size: 8)
        let serving = try ServingBackend()
        let f = serving.frontend
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        negotiate(f, eventIndex: false)
        f.send(.setMemTable, payload: le(UInt32(1)) + le(UInt32(0)) + regionPayload(guest.region), fds: [guest.fd])
        setUpQueue(f, 1, ring: ring, kick: kick, call: call)
        f.send(.setFeatures, needReply: true,
               payload: le(VirtioFeatures.version1 | VirtioFeatures.protocolFeatures | VirtioFeatures.ringEventIndex))
        XCTAssertEqual(f.receiveU64(.setFeatures), 0)
        XCTAssertEqual(serving.backend.runningQueues, [1])
        ring.setDescriptor(0, address: ring.dataArea, length: 8, flags: 2)
        ring.setUsedEvent(0)
        ring.makeAvailable(0)
        try Sys.eventfdSignal(kick)
        XCTAssertTrue(waitReadable(call))
        XCTAssertEqual(ring.availableEvent, 1, "the restarted queue publishes avail_event")
        _ = Glibc.shutdown(f.socket, Int32(SHUT_WR))
        serving.waitFinished()
    }

    func testVringAddressOutsideMemoryClosesTheConnection() throws {
        let guest = try FakeGuest()
        let serving = try ServingBackend()
        let f = serving.frontend
        negotiate(f, eventIndex: false)
        f.send(.setMemTable, needReply: true, payload: le(UInt32(1)) + le(UInt32(0)) + regionPayload(guest.region), fds: [guest.fd])
        XCTAssertEqual(f.receiveU64(.setMemTable), 0)
        f.send(.setVringNum, payload: le(UInt32(0)) + le(UInt32(8)))
        f.send(.setVringAddr, needReply: true, payload: le(UInt32(0)) + le(UInt32(0)) + le(UInt64(0x1000)) + le(UInt64(0x2000)) + le(UInt64(0x3000)) + le(UInt64(0)))
        XCTAssertEqual(f.receiveU64(.setVringAddr), 1, "REPLY_ACK reports the failure")
        XCTAssertNil(f.receive(), "then the connection is closed")
        serving.waitFinished()
        XCTAssertNoThrow(try serving.result.get())
    }

    func testMalformedMessageClosesTheConnection() throws {
        let serving = try ServingBackend()
        serving.frontend.send(.setFeatures, payload: le(UInt32(0)))
        XCTAssertNil(serving.frontend.receive())
        serving.waitFinished()
    }

    func testFeaturesNotOfferedAreRejected() throws {
        let serving = try ServingBackend()
        serving.frontend.send(.setFeatures, payload: le(UInt64(1 << 27)))
        XCTAssertNil(serving.frontend.receive())
        serving.waitFinished()
    }

    func testShutdownFDEndsServe() throws {
        let serving = try ServingBackend()
        serving.frontend.send(.getQueueNum)
        XCTAssertEqual(serving.frontend.receiveU64(.getQueueNum), 2)
        try Sys.eventfdSignal(serving.shutdown)
        serving.waitFinished()
        XCTAssertNil(serving.frontend.receive(), "serve closed the connection")
    }

    func testQueueWithoutProtocolFeaturesStartsOnKick() throws {
        let guest = try FakeGuest()
        let ring = FakeRing(guest: guest, size: 8)
        let serving = try ServingBackend()
        let f = serving.frontend
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        f.send(.setFeatures, payload: le(VirtioFeatures.version1))
        f.send(.setMemTable, payload: le(UInt32(1)) + le(UInt32(0)) + regionPayload(guest.region), fds: [guest.fd])
        let a = ring.addresses
        f.send(.setVringNum, payload: le(UInt32(0)) + le(UInt32(8)))
        f.send(.setVringAddr, payload: le(UInt32(0)) + le(UInt32(0)) + le(a.descriptorTable) + le(a.usedRing) + le(a.availableRing) + le(UInt64(0)))
        f.send(.setVringCall, payload: le(UInt64(0)), fds: [call])
        f.send(.setVringKick, payload: le(UInt64(0)), fds: [kick])
        // GET_QUEUE_NUM's reply orders us after the messages above.
        f.send(.getQueueNum)
        XCTAssertEqual(f.receiveU64(.getQueueNum), 2)
        XCTAssertEqual(serving.backend.runningQueues, [0])
        shutdownWrite(f.socket)
        serving.waitFinished()
    }

    func testCallFDThatIsAFullBlockingEventFDNeverBlocksTheQueueThread() throws {
        let guest = try FakeGuest()
        let ring = FakeRing(guest: guest, size: 16)
        let serving = try ServingBackend()
        let f = serving.frontend
        let kick = try Sys.eventfd()
        // A buggy frontend's call fd: a blocking eventfd whose counter is at its maximum,
        // so the next write(2) of 1 would wait for a reader that never comes.
        let call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        var full: UInt64 = 0xffff_ffff_ffff_fffe
        XCTAssertEqual(write(call, &full, 8), 8)

        negotiate(f, eventIndex: false)
        f.send(.setMemTable, needReply: true, payload: le(UInt32(1)) + le(UInt32(0)) + regionPayload(guest.region), fds: [guest.fd])
        XCTAssertEqual(f.receiveU64(.setMemTable), 0)
        setUpQueue(f, 1, ring: ring, kick: kick, call: call)
        ring.setDescriptor(0, address: ring.dataArea, length: 64, flags: 2)
        ring.makeAvailable(0)
        try Sys.eventfdSignal(kick)
        // The chain is served (and the notification given up) rather than the thread stuck in write(2).
        let deadline = Date().addingTimeInterval(5)
        while ring.usedIndex != 1 && Date() < deadline { usleep(1000) }
        XCTAssertEqual(ring.usedIndex, 1)
        try Sys.eventfdSignal(serving.shutdown)
        if serving.finished.wait(timeout: .now() + 5) != .success {
            XCTFail("stopping the queue hung on the call fd")
            // Unblock the writer so the serving thread can finish.
            var value: UInt64 = 0
            _ = read(call, &value, 8)
            serving.waitFinished()
        }
    }

    func testPipeAsCallFDIsRefusedAndClosesTheConnection() throws {
        let serving = try ServingBackend()
        let f = serving.frontend
        var ends: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&ends), 0)
        defer { Sys.close(ends[0]); Sys.close(ends[1]) }
        negotiate(f, eventIndex: false)
        f.send(.setVringCall, needReply: true, payload: le(UInt64(1)), fds: [ends[1]])
        XCTAssertEqual(f.receiveU64(.setVringCall), 1, "nacked")
        serving.waitFinished()
        XCTAssertEqual(serving.backend.runningQueues, [])
    }

    func testRegionAddedWithAddMemRegThenShrunkEndsTheConnectionInsteadOfTheProcess() throws {
        let guest = try FakeGuest()  // an unsealed memfd
        let ring = FakeRing(guest: guest, size: 16)
        let serving = try ServingBackend()
        let f = serving.frontend
        let kick = try Sys.eventfd(), call = try Sys.eventfd()
        defer { Sys.close(kick); Sys.close(call) }
        negotiate(f, eventIndex: false)
        f.send(.addMemReg, needReply: true, payload: le(UInt64(0)) + regionPayload(guest.region), fds: [guest.fd])
        XCTAssertEqual(f.receiveU64(.addMemReg), 0)
        setUpQueue(f, 1, ring: ring, kick: kick, call: call)
        ring.setDescriptor(0, address: ring.dataArea, length: 64, flags: 2)
        ring.makeAvailable(0)
        try Sys.eventfdSignal(kick)
        XCTAssertTrue(waitReadable(call), "the ring works before the shrink")
        // From here this process must not touch the fake guest's pages either.
        try Sys.ftruncate(guest.fd, 0)
        try Sys.eventfdSignal(kick)
        serving.waitFinished()
        XCTAssertNoThrow(try serving.result.get(), "a frontend fault is not a local failure")
        XCTAssertEqual(serving.backend.runningQueues, [])
        XCTAssertNil(serving.backend.memory)
    }

    private func openDescriptorCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    /// The descriptor count once it has held still for 100 ms: a serving thread of an
    /// earlier test may still be dropping its last references (and closing fds).
    private func settledDescriptorCount() -> Int {
        var last = openDescriptorCount()
        for _ in 0..<50 {
            usleep(100_000)
            let now = openDescriptorCount()
            if now == last { return now }
            last = now
        }
        return last
    }

    func testFrontendGoneWithQueuesRunningLeavesNoDescriptorOrMappingBehind() throws {
        var before = 0
        // Round -1 only warms up: the first use of the dispatch runtime opens descriptors
        // of its own (epoll, eventfd, timerfd) that stay for the life of the process.
        for step in -1..<4 {
            if step == 0 { before = settledDescriptorCount() }
            // Each round: the frontend disappears at a later point of the setup.
            let guest = try FakeGuest()
            let ring = FakeRing(guest: guest, size: 16)
            let serving = try ServingBackend(configuration: {
                var c = BackendConfiguration(numRequestQueues: 1, maxQueueSize: 256)
                c.threadPoolSize = 2
                return c
            }())
            let f = serving.frontend
            let kick = try Sys.eventfd(), call = try Sys.eventfd()
            negotiate(f, eventIndex: true)
            if step >= 1 {
                f.send(.setMemTable, needReply: true, payload: le(UInt32(1)) + le(UInt32(0)) + regionPayload(guest.region), fds: [guest.fd])
                XCTAssertEqual(f.receiveU64(.setMemTable), 0)
            }
            if step >= 2 {
                setUpQueue(f, 1, ring: ring, kick: kick, call: call)
                XCTAssertEqual(serving.backend.runningQueues, [1])
            }
            if step >= 3 {
                // Chains posted and kicked, the frontend gone before they are reaped.
                for i in 0..<8 {
                    ring.setDescriptor(i, address: ring.dataArea + UInt64(i) * 0x1000, length: 64, flags: 2)
                    ring.makeAvailable(UInt16(i))
                }
                try Sys.eventfdSignal(kick)
            }
            shutdownWrite(f.socket)
            serving.waitFinished()
            XCTAssertNoThrow(try serving.result.get())
            XCTAssertEqual(serving.backend.runningQueues, [], "step \(step)")
            XCTAssertNil(serving.backend.memory, "step \(step): guest memory unmapped")
            Sys.close(kick)
            Sys.close(call)
        }
        XCTAssertEqual(settledDescriptorCount(), before, "every descriptor the backend received or made is closed")
    }

    private func shutdownWrite(_ fd: Int32) {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }
}
