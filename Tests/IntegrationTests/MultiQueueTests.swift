import XCTest
import CVirtioFS
import VhostUserFrontend

/// Every request queue carries requests. QEMU's C virtiofsd has one request queue only.
final class MultiQueueTests: XCTestCase {
    private func exerciseEveryQueue(count: Int) throws {
        let rig = try Rig(requestQueues: count, files: ["f": "on every queue"])
        try rig.frontend.handshake()
        XCTAssertEqual(rig.frontend.queues.count, count + 1)
        let first = try rig.fuseClient(queue: 1, slots: 2)
        try first.initialize()
        for queue in 1...count {
            let client = queue == 1 ? first : try FuseClient(frontend: rig.frontend, queue: queue, slots: 2)
            XCTAssertEqual(try client.lookup(name: "f").attr.size, 14, "queue \(queue)")
            XCTAssertEqual(rig.frontend.queues[queue].inFlight, 0)
        }
    }

    func testOneRequestQueueServesRequests() throws {
        try exerciseEveryQueue(count: 1)
    }

    func testFourRequestQueuesEachServeRequests() throws {
        try XCTSkipIf(DaemonUnderTest.isReference, "the reference daemon supports one request queue")
        try exerciseEveryQueue(count: 4)
    }

    func testAskingForMoreQueuesThanOfferedFailsTheHandshake() throws {
        // Both daemons offer two queues (hiprio + one request queue) unless asked for more.
        let rig = try Rig(requestQueues: 2, askDaemonForQueues: false)
        XCTAssertThrowsError(try rig.frontend.handshake()) { error in
            guard case .protocolViolation = error as? FrontendError else { return XCTFail("\(error)") }
        }
    }
}
