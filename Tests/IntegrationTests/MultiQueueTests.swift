import Foundation
import XCTest
import CVirtioFS
import VhostUserFrontend

/// Every request queue carries requests. QEMU's C virtiofsd has one request queue only.
final class MultiQueueTests: XCTestCase {
    private func exerciseEveryQueue(count: Int, askDaemonForQueues: Bool = true) throws -> Rig {
        let rig = try Rig(requestQueues: count, askDaemonForQueues: askDaemonForQueues, files: ["f": "on every queue"])
        try rig.frontend.handshake()
        XCTAssertEqual(rig.frontend.queues.count, count + 1)
        let first = try rig.fuseClient(queue: 1, slots: 2)
        try first.initialize()
        for queue in 1...count {
            let client = queue == 1 ? first : try FuseClient(frontend: rig.frontend, queue: queue, slots: 2)
            XCTAssertEqual(try client.lookup(name: "f").attr.size, 14, "queue \(queue)")
            XCTAssertEqual(rig.frontend.queues[queue].inFlight, 0)
        }
        return rig
    }

    /// Threads of `root` and every process below it (from /proc/PID/status).
    func testOneRequestQueueServesRequests() throws {
        _ = try exerciseEveryQueue(count: 1)
    }

    func testFourRequestQueuesEachServeRequests() throws {
        try XCTSkipIf(DaemonUnderTest.isReference, "the reference daemon supports one request queue")
        _ = try exerciseEveryQueue(count: 4)
    }

    func testFourRequestQueuesWorkWithoutADaemonFlag() throws {
        // libvirt sets the device's num-request-queues and passes nothing to the daemon.
        try XCTSkipIf(DaemonUnderTest.isReference, "the reference daemon supports one request queue")
        _ = try exerciseEveryQueue(count: 4, askDaemonForQueues: false)
    }

    func testOnlyEnabledQueuesGetAThread() throws {
        try XCTSkipIf(DaemonUnderTest.isReference, "the reference daemon supports one request queue")
        // Both offer 16 request queues; the frontend enables one, then four.
        let one = try exerciseEveryQueue(count: 1, askDaemonForQueues: false)
        let four = try exerciseEveryQueue(count: 4, askDaemonForQueues: false)
        XCTAssertEqual(processTreeStatusTotal(field: "Threads", root: four.daemon.pid) - processTreeStatusTotal(field: "Threads", root: one.daemon.pid), 3,
                       "three more enabled queues, three more threads")
    }

    func testAskingForMoreQueuesThanOfferedFailsTheHandshake() throws {
        // --num-request-queues caps what ours offers; the reference offers one request queue.
        let extra = DaemonUnderTest.isReference ? [] : ["--num-request-queues=1"]
        let rig = try Rig(requestQueues: 2, askDaemonForQueues: false, extraArguments: extra)
        XCTAssertThrowsError(try rig.frontend.handshake()) { error in
            guard case .protocolViolation = error as? FrontendError else { return XCTFail("\(error)") }
        }
    }

    func testAskingForMoreThanSixteenQueuesFailsTheHandshake() throws {
        try XCTSkipIf(DaemonUnderTest.isReference, "the reference daemon supports one request queue")
        let rig = try Rig(requestQueues: 17, askDaemonForQueues: false)
        XCTAssertThrowsError(try rig.frontend.handshake()) { error in
            guard case .protocolViolation = error as? FrontendError else { return XCTFail("\(error)") }
        }
    }
}
