import Foundation
import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// A frontend that goes away, stops queues or swaps memory at awkward moments: the
/// daemon ends cleanly when its one frontend is gone, and while it keeps serving it
/// leaves no thread, descriptor or mapping behind.
final class FrontendDisconnectTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipIf(DaemonUnderTest.isReference && ProcessInfo.processInfo.environment["HOSTILE_AGAINST_REFERENCE"] == nil,
                      "these pin our daemon's behaviour")
    }

    static let fileSize = 1 << 16
    static let content = String(repeating: "0123456789abcdef", count: fileSize / 16)

    // MARK: - What the serving process holds

    /// The process that serves the frontend: in the namespace sandbox the daemon's child.
    private func servingPID(_ daemon: DaemonProcess) -> pid_t {
        let path = "/proc/\(daemon.pid)/task/\(daemon.pid)/children"
        if let text = try? String(contentsOfFile: path, encoding: .utf8),
           let first = text.split(separator: " ").first,
           let child = pid_t(first.trimmingCharacters(in: .whitespacesAndNewlines)) {
            return child
        }
        return daemon.pid
    }

    private struct Holdings: Equatable, CustomStringConvertible {
        var descriptors: Int
        var threads: Int
        /// Mappings of the frontend's guest memory memfd.
        var guestMappings: Int
        var description: String { "\(descriptors) fds, \(threads) threads, \(guestMappings) guest memory mappings" }
    }

    private func holdings(_ pid: pid_t) -> Holdings {
        let fm = FileManager.default
        let maps = (try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? ""
        return Holdings(descriptors: (try? fm.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1,
                        threads: (try? fm.contentsOfDirectory(atPath: "/proc/\(pid)/task").count) ?? -1,
                        guestMappings: maps.split(separator: "\n").filter { $0.contains("memfd:guest-ram") }.count)
    }

    /// Polls (bounded) until the process holds what it held before: threads that were
    /// stopped may take a moment to leave /proc.
    private func assertHoldsAsBefore(_ pid: pid_t, _ before: Holdings, _ what: String,
                                     file: StaticString = #filePath, line: UInt = #line) {
        var now = holdings(pid)
        let deadline = Date().addingTimeInterval(5)
        while now != before && Date() < deadline {
            usleep(10_000)
            now = holdings(pid)
        }
        XCTAssertEqual(now, before, "\(what): before \(before), after \(now)", file: file, line: line)
    }

    /// Expects the daemon to end by itself with status 0 (its one frontend is gone) and say so.
    private func assertCleanExit(_ rig: Rig, _ what: String, logLine: String = "frontend disconnected",
                                 file: StaticString = #filePath, line: UInt = #line) {
        guard let exit = rig.daemon.waitForExit(timeoutMilliseconds: 10_000) else {
            return XCTFail("\(what): daemon still running: \(rig.daemon.logTail())", file: file, line: line)
        }
        XCTAssertEqual(exit, .exited(0), "\(what): \(rig.daemon.logTail())", file: file, line: line)
        XCTAssertTrue(rig.daemon.log().contains(logLine), "\(what): log lacks \"\(logLine)\": \(rig.daemon.logTail())",
                      file: file, line: line)
    }

    private func startReads(_ fuse: FuseClient, node: UInt64, handle: UInt64, count: Int) throws {
        for slot in 0..<count {
            try fuse.start(.read(node: node, handle: handle, offset: UInt64(slot * 4096), size: 4096), slot: slot, kick: true)
        }
    }

    /// Waits for `count` replies and checks each is a successful 4 KiB read.
    private func finishReads(_ fuse: FuseClient, count: Int, file: StaticString = #filePath, line: UInt = #line) throws {
        var done = 0
        while done < count {
            let n = try fuse.waitCompletions { reply in
                XCTAssertEqual(reply.error, 0, file: file, line: line)
                XCTAssertEqual(reply.payload.count, 4096, file: file, line: line)
            }
            XCTAssertGreaterThan(n, 0, "no reply within the timeout", file: file, line: line)
            if n == 0 { return }
            done += n
        }
    }

    private func openFile(_ rig: Rig, slots: Int = 16) throws -> (FuseClient, UInt64, UInt64) {
        let fuse = try rig.fuseClient(slots: slots)
        try fuse.initialize()
        let node = try fuse.lookup(name: "f").nodeid
        let handle = try fuse.open(node: node).fh
        return (fuse, node, handle)
    }

    // MARK: - The frontend goes away

    func testFrontendDisconnectingAfterEveryHandshakeMessageEndsTheDaemonCleanly() throws {
        let complete = try Rig()
        try complete.frontend.handshake()
        let total = complete.frontend.messagesSent
        XCTAssertGreaterThanOrEqual(total, 19, "QEMU's handshake for two queues")
        for step in 1...total {
            let rig = try Rig()
            rig.frontend.disconnectAfterMessages = step
            if step < total {
                XCTAssertThrowsError(try rig.frontend.handshake(), "after \(step) messages")
            } else {
                try rig.frontend.handshake()
            }
            rig.frontend.close()
            assertCleanExit(rig, "frontend gone after message \(step) of \(total)")
        }
    }

    func testFrontendDisconnectingInTheMiddleOfAMessageEndsTheDaemonCleanly() throws {
        let rig = try Rig()
        try rig.frontend.handshake()
        // A header promising 40 bytes, 8 of them, then the frontend is gone.
        let eight = [UInt8](repeating: 0, count: 8)
        try eight.withUnsafeBytes {
            try rig.frontend.sendRaw(request: CVFS_VHOST_USER_SET_VRING_ADDR.rawValue, flags: UInt32(CVFS_VHOST_USER_VERSION),
                                     payload: $0, declaredSize: 40)
        }
        rig.frontend.close()
        assertCleanExit(rig, "frontend gone mid-message", logLine: "connection closed in the middle of a message")
    }

    func testFrontendDisconnectingWithRequestsInFlightEndsTheDaemonCleanly() throws {
        for poolSize in [0, 4] {
            let rig = try Rig(extraArguments: poolSize > 0 ? ["--thread-pool-size=\(poolSize)"] : [],
                              files: ["f": Self.content])
            let (fuse, node, handle) = try openFile(rig)
            try startReads(fuse, node: node, handle: handle, count: 16)
            rig.frontend.close()
            assertCleanExit(rig, "gone with 16 reads in flight, pool of \(poolSize)")
        }
    }

    // MARK: - The daemon keeps serving

    func testGetVringBaseWithChainsInFlightCompletesWhatWasTakenAndTheQueueResumes() throws {
        try getVringBaseUnderLoad(poolSize: 0)
    }

    func testGetVringBaseWithChainsInFlightOnThePoolCompletesWhatWasTakenAndTheQueueResumes() throws {
        try getVringBaseUnderLoad(poolSize: 4)
    }

    private func getVringBaseUnderLoad(poolSize: Int) throws {
        let rig = try Rig(extraArguments: poolSize > 0 ? ["--thread-pool-size=\(poolSize)"] : [], files: ["f": Self.content])
        let (fuse, node, handle) = try openFile(rig)
        let pid = servingPID(rig.daemon)
        let before = holdings(pid)
        XCTAssertEqual(before.guestMappings, 1, "the serving process maps the guest memory once")
        let queue = rig.frontend.queues[1]
        // INIT, LOOKUP and OPEN went this way already.
        var posted = UInt32(queue.usedIndex)
        for round in 0..<8 {
            try startReads(fuse, node: node, handle: handle, count: 16)
            posted += 16
            let base = try rig.frontend.stopQueue(1)
            XCTAssertLessThanOrEqual(base & 0xffff, posted & 0xffff, "round \(round): took more than was posted")
            // In-order work: every chain taken before the stop is back in the used ring.
            XCTAssertEqual(queue.usedIndex, UInt16(truncatingIfNeeded: base), "round \(round)")
            try rig.frontend.resumeQueue(1, base: base)
            try finishReads(fuse, count: 16)
        }
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, UInt64(Self.fileSize))
        assertHoldsAsBefore(pid, before, "after 8 stops and resumes under load, pool of \(poolSize)")
        XCTAssertTrue(rig.daemon.isRunning)
    }

    func testMemoryTableReplacedUnderLoadLosesNoRequestAndNoMapping() throws {
        for poolSize in [0, 4] {
            let rig = try Rig(extraArguments: poolSize > 0 ? ["--thread-pool-size=\(poolSize)"] : [],
                              files: ["f": Self.content])
            let (fuse, node, handle) = try openFile(rig)
            let pid = servingPID(rig.daemon)
            let before = holdings(pid)
            XCTAssertEqual(before.guestMappings, 1)
            for _ in 0..<8 {
                try startReads(fuse, node: node, handle: handle, count: 16)
                try rig.frontend.resendMemoryTable()
                try finishReads(fuse, count: 16)
            }
            assertHoldsAsBefore(pid, before, "after 8 memory tables under load, pool of \(poolSize)")
            XCTAssertTrue(rig.daemon.isRunning)
        }
    }

    func testQueueDisabledAndReenabledUnderLoadServesEveryRequest() throws {
        try disableAndEnableUnderLoad(poolSize: 0)
    }

    func testQueueDisabledAndReenabledUnderLoadOnThePoolServesEveryRequest() throws {
        try disableAndEnableUnderLoad(poolSize: 4)
    }

    private func disableAndEnableUnderLoad(poolSize: Int) throws {
        let rig = try Rig(extraArguments: poolSize > 0 ? ["--thread-pool-size=\(poolSize)"] : [], files: ["f": Self.content])
        let (fuse, node, handle) = try openFile(rig)
        let pid = servingPID(rig.daemon)
        let before = holdings(pid)
        XCTAssertEqual(before.guestMappings, 1, "the serving process maps the guest memory once")
        for _ in 0..<8 {
            try startReads(fuse, node: node, handle: handle, count: 8)
            try rig.frontend.setVringEnabled(1, false)
            // Posted while the ring is disabled: served once it is enabled again.
            for slot in 8..<16 {
                try fuse.start(.read(node: node, handle: handle, offset: UInt64(slot * 4096), size: 4096), slot: slot)
            }
            try rig.frontend.setVringEnabled(1, true)
            try finishReads(fuse, count: 16)
        }
        assertHoldsAsBefore(pid, before, "after 8 disables and enables under load, pool of \(poolSize)")
    }
}
