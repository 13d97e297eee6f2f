import Foundation
import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// Ours must survive a hostile guest and a broken frontend. QEMU's C virtiofsd does not
/// (it asserts or marks the device broken), so these run only against our daemon.
final class HostileGuestTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipIf(DaemonUnderTest.isReference && ProcessInfo.processInfo.environment["HOSTILE_AGAINST_REFERENCE"] == nil,
                      "hostile-guest behaviour is ours; the reference daemon does not promise it")
    }

    /// Posts `chain` directly on request queue 1, expects it back with length 0, then
    /// proves the daemon still answers a normal request on the same queue.
    private func expectDroppedThenServing(_ makeChain: (GuestMemory) throws -> [Descriptor],
                                          file: StaticString = #filePath, line: UInt = #line) throws {
        let rig = try Rig(files: ["f": "still here"])
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        let queue = rig.frontend.queues[1]
        let head = try queue.submit(try makeChain(rig.frontend.memory))
        let used = try queue.waitForUsed(count: 1)
        XCTAssertEqual(used, [UsedElement(head: head, length: 0)], "a bad chain comes back empty", file: file, line: line)
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 10, file: file, line: line)
        XCTAssertTrue(rig.daemon.isRunning, rig.daemon.logTail(), file: file, line: line)
    }

    /// A well-formed GETATTR of the root, written at `buffer`; returns its length.
    private func getattrRequest(at buffer: GuestBuffer) -> UInt32 {
        var header = fuse_in_header()
        header.len = 40 + 16
        header.opcode = FUSE_GETATTR.rawValue
        header.unique = 999
        header.nodeid = UInt64(FUSE_ROOT_ID)
        withUnsafeBytes(of: header) { buffer.bytes.copyMemory(from: $0) }
        return 56
    }

    func testReadableBufferOutsideGuestMemoryIsDroppedAndDaemonKeepsServing() throws {
        try expectDroppedThenServing { memory in
            let reply = try memory.allocate(4096)
            return [Descriptor(address: UInt64(memory.size) + 0x1000, length: 56, writable: false),
                    Descriptor(reply, writable: true)]
        }
    }

    func testWritableBufferOutsideGuestMemoryIsDroppedAndDaemonKeepsServing() throws {
        try expectDroppedThenServing { memory in
            let request = try memory.allocate(4096)
            let length = getattrRequest(at: request)
            return [Descriptor(address: request.guestAddress, length: length, writable: false),
                    Descriptor(address: UInt64(memory.size) - 8, length: 4096, writable: true)]
        }
    }

    func testBufferWhoseEndWrapsTheAddressSpaceIsDropped() throws {
        try expectDroppedThenServing { memory in
            let reply = try memory.allocate(4096)
            return [Descriptor(address: UInt64.max - 15, length: 56, writable: false), Descriptor(reply, writable: true)]
        }
    }

    func testDescriptorLoopIsDroppedAndDaemonKeepsServing() throws {
        let rig = try Rig(files: ["f": "still here"])
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        let queue = rig.frontend.queues[1]
        let request = try rig.frontend.memory.allocate(4096)
        let length = getattrRequest(at: request)
        // Two readable descriptors pointing at each other: a walk without a limit never ends.
        let head = try queue.submitRaw(count: 2) { slots in
            [RawDescriptor(address: request.guestAddress, length: length, flags: SplitQueue.flagNext, next: slots[1]),
             RawDescriptor(address: request.guestAddress, length: length, flags: SplitQueue.flagNext, next: slots[0])]
        }
        XCTAssertEqual(try queue.waitForUsed(count: 1), [UsedElement(head: head, length: 0)])
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 10)
    }

    func testIndirectTableOutsideGuestMemoryIsDropped() throws {
        let rig = try Rig(files: ["f": "still here"])
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        let queue = rig.frontend.queues[1]
        let head = try queue.submitRaw(count: 1) { _ in
            [RawDescriptor(address: UInt64(rig.frontend.memory.size) + 0x10000, length: 64, flags: SplitQueue.flagIndirect, next: 0)]
        }
        XCTAssertEqual(try queue.waitForUsed(count: 1), [UsedElement(head: head, length: 0)])
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 10)
    }

    func testTruncatedFuseHeaderGetsNoCrash() throws {
        let rig = try Rig(files: ["f": "still here"])
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        let queue = rig.frontend.queues[1]
        let request = try rig.frontend.memory.allocate(4096)
        let reply = try rig.frontend.memory.allocate(4096)
        _ = getattrRequest(at: request)
        // Only 20 of the header's 40 bytes are readable.
        _ = try queue.submit([Descriptor(address: request.guestAddress, length: 20, writable: false), Descriptor(reply, writable: true)])
        _ = try queue.waitForUsed(count: 1)
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 10)
    }

    // MARK: - Broken vhost-user messages

    /// Sends one bad message after the handshake and expects: the daemon closes the
    /// connection, exits on its own with a status (not a signal), and logs why.
    private func expectCleanExitAfter(_ send: (VhostUserFrontend) throws -> Void,
                                      file: StaticString = #filePath, line: UInt = #line) throws {
        let rig = try Rig()
        try rig.frontend.handshake()
        let logBefore = rig.daemon.log().utf8.count
        try send(rig.frontend)
        XCTAssertTrue(rig.frontend.waitForDisconnect(timeoutMilliseconds: 5000), "connection still open", file: file, line: line)
        let exit = rig.daemon.waitForExit(timeoutMilliseconds: 5000)
        guard let exit else { return XCTFail("daemon still running", file: file, line: line) }
        if case .signalled(let signal) = exit {
            XCTFail("daemon died of signal \(signal): \(rig.daemon.logTail())", file: file, line: line)
        }
        XCTAssertGreaterThan(rig.daemon.log().utf8.count, logBefore, "the daemon says why it stopped", file: file, line: line)
    }

    func testUnknownRequestClosesConnectionAndDaemonExitsCleanly() throws {
        try expectCleanExitAfter { frontend in
            try frontend.sendRaw(request: 0xdead, flags: UInt32(CVFS_VHOST_USER_VERSION), payload: UnsafeRawBufferPointer(start: nil, count: 0))
        }
    }

    func testShortPayloadClosesConnectionAndDaemonExitsCleanly() throws {
        try expectCleanExitAfter { frontend in
            let two: [UInt8] = [1, 0]
            try two.withUnsafeBytes {
                try frontend.sendRaw(request: CVFS_VHOST_USER_SET_VRING_NUM.rawValue, flags: UInt32(CVFS_VHOST_USER_VERSION), payload: $0)
            }
        }
    }

    func testHugeDeclaredSizeClosesConnectionAndDaemonExitsCleanly() throws {
        try expectCleanExitAfter { frontend in
            try frontend.sendRaw(request: CVFS_VHOST_USER_SET_VRING_NUM.rawValue, flags: UInt32(CVFS_VHOST_USER_VERSION),
                                 payload: UnsafeRawBufferPointer(start: nil, count: 0), declaredSize: 0x7fff_ffff)
        }
    }

    func testVringIndexBeyondTheQueuesClosesConnectionAndDaemonExitsCleanly() throws {
        try expectCleanExitAfter { frontend in
            var state = cvfs_vhost_user_vring_state(index: 200, num: 128)
            try withUnsafeBytes(of: &state) {
                try frontend.sendRaw(request: CVFS_VHOST_USER_SET_VRING_NUM.rawValue, flags: UInt32(CVFS_VHOST_USER_VERSION), payload: $0)
            }
        }
    }

    func testSigtermEndsADaemonWhoseFrontendStalledMidMessage() throws {
        let rig = try Rig()
        try rig.frontend.handshake()
        // A header that promises 8 bytes of payload, then nothing, with the connection left open.
        try rig.frontend.sendRaw(request: CVFS_VHOST_USER_SET_FEATURES.rawValue, flags: UInt32(CVFS_VHOST_USER_VERSION),
                                 payload: UnsafeRawBufferPointer(start: nil, count: 0), declaredSize: 8)
        usleep(200_000)
        try Sys.signalProcess(rig.daemon.pid, SIGTERM)
        guard let exit = rig.daemon.waitForExit(timeoutMilliseconds: 5000) else {
            return XCTFail("SIGTERM did not end a daemon waiting for the rest of a message")
        }
        if case .signalled(let signal) = exit { XCTFail("daemon died of signal \(signal): \(rig.daemon.logTail())") }
    }
}
