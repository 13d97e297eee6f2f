import Foundation
import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// A broken or hostile frontend (what QEMU shares and sends) must never kill the daemon
/// silently: what can be checked is refused with a message when it arrives, and a fault
/// that still happens later closes the connection with a log line.
final class FrontendFaultTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipIf(DaemonUnderTest.isReference && ProcessInfo.processInfo.environment["HOSTILE_AGAINST_REFERENCE"] == nil,
                      "the reference daemon does not promise to survive a broken frontend")
    }

    /// Expects the daemon to close the connection, end on its own by an exit status (never
    /// a signal), and log a line containing `logLine`.
    private func expectClosedWithLog(_ rig: Rig, _ logLine: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(rig.frontend.waitForDisconnect(timeoutMilliseconds: 5000), "connection still open: \(rig.daemon.logTail())",
                      file: file, line: line)
        guard let exit = rig.daemon.waitForExit(timeoutMilliseconds: 5000) else {
            return XCTFail("daemon still running: \(rig.daemon.logTail())", file: file, line: line)
        }
        if case .signalled(let signal) = exit {
            XCTFail("daemon died of signal \(signal): \(rig.daemon.logTail())", file: file, line: line)
        }
        XCTAssertTrue(rig.daemon.log().contains(logLine), "log lacks \"\(logLine)\": \(rig.daemon.logTail())", file: file, line: line)
    }

    // MARK: - Guest memory files

    func testShrinkingAnUnsealedRegionAfterSetMemTableClosesTheConnectionInsteadOfSIGBUS() throws {
        var options = VhostUserFrontend.Options()
        options.sealMemory = false
        let rig = try Rig(options: options, files: ["f": "0123456789"])
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 10)
        XCTAssertTrue(rig.daemon.log().contains("not sealed against shrinking"), rig.daemon.logTail())
        // The rings live in the region: after this every access to them faults, ours too.
        try rig.frontend.memory.resizeFile(to: 0)
        rig.frontend.queues[1].kick()
        expectClosedWithLog(rig, "guest memory became inaccessible")
    }

    func testSealedMemfdIsAcceptedWithoutAWarning() throws {
        let rig = try Rig(files: ["f": "0123456789"])
        XCTAssertTrue(rig.frontend.memory.sealed)
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 10)
        XCTAssertFalse(rig.daemon.log().contains("not sealed"), rig.daemon.logTail())
        XCTAssertTrue(rig.daemon.isRunning)
    }

    func testShrinkingASealedRegionIsRefusedByTheKernel() throws {
        let rig = try Rig()
        try rig.frontend.handshake()
        XCTAssertThrowsError(try rig.frontend.memory.resizeFile(to: 0), "F_SEAL_SHRINK keeps the region whole")
    }

    func testPipeAsMemoryRegionIsRefusedWithAClearMessage() throws {
        let rig = try Rig()
        _ = try rig.frontend.requestU64(CVFS_VHOST_USER_GET_FEATURES)
        var pipeFDs: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&pipeFDs), 0)
        defer { pipeFDs.forEach(Sys.close) }
        var table = cvfs_vhost_user_memory()
        table.nregions = 1
        table.regions.0 = cvfs_vhost_user_memory_region(guest_phys_addr: 0, memory_size: 1 << 20,
                                                        userspace_addr: 0x7000_0000_0000, mmap_offset: 0)
        let length = 8 + MemoryLayout<cvfs_vhost_user_memory_region>.size
        try withUnsafeBytes(of: &table) {
            try rig.frontend.sendRaw(request: CVFS_VHOST_USER_SET_MEM_TABLE.rawValue, flags: UInt32(CVFS_VHOST_USER_VERSION),
                                     payload: UnsafeRawBufferPointer(rebasing: $0[0..<length]), descriptors: [pipeFDs[0]])
        }
        expectClosedWithLog(rig, "its file descriptor is a pipe")
    }

    // MARK: - Notification fds

    func testRegularFileAsKickFDIsRefusedWithAClearMessage() throws {
        let rig = try Rig()
        try rig.frontend.handshake()
        let path = rig.directory.appendingPathComponent("not-an-eventfd").path
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { Sys.close(fd) }
        // A regular file polls readable for ever: accepted, it would spin the queue thread.
        XCTAssertThrowsError(try rig.frontend.sendVringDescriptor(CVFS_VHOST_USER_SET_VRING_KICK, index: 1, fd: fd))
        expectClosedWithLog(rig, "SET_VRING_KICK: queue 1: the file descriptor is a regular file, not an eventfd")
    }

    func testPipeAsCallFDIsRefusedWithAClearMessage() throws {
        let rig = try Rig()
        try rig.frontend.handshake()
        var pipeFDs: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&pipeFDs), 0)
        defer { pipeFDs.forEach(Sys.close) }
        XCTAssertThrowsError(try rig.frontend.sendVringDescriptor(CVFS_VHOST_USER_SET_VRING_CALL, index: 0, fd: pipeFDs[1]))
        expectClosedWithLog(rig, "SET_VRING_CALL: queue 0: the file descriptor is a pipe, not an eventfd")
    }

    func testFreshEventFDsAsKickAndCallAreAccepted() throws {
        let rig = try Rig(files: ["f": "0123456789"])
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        // QEMU sends new notifiers when the guest re-plugs interrupts; eventfds are fine.
        let err = try Sys.eventfd()
        defer { Sys.close(err) }
        try rig.frontend.sendVringDescriptor(CVFS_VHOST_USER_SET_VRING_ERR, index: 1, fd: err)
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 10)
        XCTAssertTrue(rig.daemon.isRunning)
    }
}
