import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

final class HandshakeTests: XCTestCase {
    func testHandshakeNegotiatesVersion1AndEnablesQueues() throws {
        let rig = try Rig()
        try rig.frontend.handshake()
        XCTAssertNotEqual(rig.frontend.ackedFeatures & VhostUserFrontend.featureVersion1, 0)
        XCTAssertEqual(rig.frontend.queues.count, 2, "hiprio plus one request queue")
        XCTAssertTrue(rig.daemon.isRunning, rig.daemon.logTail())
    }

    func testInitLookupReadReturnsFileContent() throws {
        let rig = try Rig(files: ["hello.txt": "hello from the host\n"])
        let fuse = try rig.fuseClient()
        let initOut = try fuse.initialize()
        XCTAssertEqual(initOut.major, 7)
        let entry = try fuse.lookup(name: "hello.txt")
        XCTAssertEqual(entry.attr.size, 20)
        let file = try fuse.open(node: entry.nodeid)
        let bytes = try fuse.read(node: entry.nodeid, handle: file.fh, offset: 0, size: 4096)
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), "hello from the host\n")
        try fuse.release(node: entry.nodeid, handle: file.fh)
    }
}
