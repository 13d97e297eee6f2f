import Foundation
import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// FUSE traffic any virtio-fs daemon must serve: these run against ours and the reference.
final class FuseOperationTests: XCTestCase {
    func testLookupOfMissingNameFailsWithENOENT() throws {
        let rig = try Rig()
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        XCTAssertThrowsError(try fuse.lookup(name: "no-such-file")) { error in
            XCTAssertEqual(error as? FrontendError, .fuse(opcode: FUSE_LOOKUP.rawValue, error: -ENOENT))
        }
    }

    func testGetattrOfRootIsADirectory() throws {
        let rig = try Rig()
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        let attr = try fuse.getattr(node: UInt64(FUSE_ROOT_ID))
        XCTAssertEqual(attr.attr.mode & 0o170000, 0o040000, "S_IFDIR")
    }

    func testCreateWriteReleaseLandsOnHostAndUnlinkRemovesIt() throws {
        let rig = try Rig()
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        let created = try fuse.create(name: "new.bin", flags: O_RDWR | O_CREAT, mode: 0o640)
        let payload = Array("written by the guest".utf8)
        let written = try fuse.write(node: created.entry.nodeid, handle: created.open.fh, offset: 0, data: payload)
        XCTAssertEqual(written, UInt32(payload.count))
        let back = try fuse.read(node: created.entry.nodeid, handle: created.open.fh, offset: 0, size: 4096)
        XCTAssertEqual(back, payload)
        try fuse.release(node: created.entry.nodeid, handle: created.open.fh)
        let host = rig.shared.appendingPathComponent("new.bin")
        XCTAssertEqual(try Data(contentsOf: host), Data(payload))
        try fuse.unlink(name: "new.bin")
        XCTAssertFalse(FileManager.default.fileExists(atPath: host.path))
    }

    func testOneMebibyteWriteAndReadRoundTrip() throws {
        let rig = try Rig()
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        let created = try fuse.create(name: "big.bin")
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ ($0 >> 12)) }
        defer { if testRun?.hasSucceeded == false { print(rig.daemon.log()) } }
        XCTAssertEqual(try fuse.write(node: created.entry.nodeid, handle: created.open.fh, offset: 0, data: payload),
                       UInt32(payload.count))
        let back = try fuse.read(node: created.entry.nodeid, handle: created.open.fh, offset: 0, size: 1 << 20)
        XCTAssertEqual(back.count, payload.count)
        XCTAssertTrue(back == payload, "1 MiB read differs from what was written")
        try fuse.release(node: created.entry.nodeid, handle: created.open.fh)
    }

    func testForgetChainComesBackOnTheHiprioQueue() throws {
        let rig = try Rig(files: ["f": "x"])
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        let entry = try fuse.lookup(name: "f")
        let requestUsedBefore = rig.frontend.queues[1].usedIndex
        try fuse.forget(node: entry.nodeid, lookups: 1)
        XCTAssertEqual(rig.frontend.queues[0].usedIndex, 1, "the FORGET chain was used on hiprio")
        XCTAssertEqual(rig.frontend.queues[0].inFlight, 0)
        XCTAssertEqual(rig.frontend.queues[1].usedIndex, requestUsedBefore, "nothing came back on the request queue")
        // The daemon still serves the request queue afterwards.
        XCTAssertNoThrow(try fuse.lookup(name: "f"))
    }

    func testSixteenRequestsInFlightAllComplete() throws {
        let rig = try Rig(files: ["a": "1", "b": "22", "c": "333"])
        let fuse = try rig.fuseClient(slots: 16)
        try fuse.initialize()
        let names = ["a", "b", "c"]
        for slot in 0..<16 {
            try fuse.start(.lookup(parent: UInt64(FUSE_ROOT_ID), name: names[slot % 3]), slot: slot, kick: slot == 15)
        }
        var sizes = [Int: UInt64]()
        var uniques = Set<UInt64>()
        while sizes.count < 16 {
            try fuse.waitCompletions { reply in
                XCTAssertEqual(reply.error, 0)
                XCTAssertEqual(reply.headerLength, reply.usedLength, "the used length is the reply's length")
                uniques.insert(reply.unique)
                sizes[reply.slot] = reply.decode(fuse_entry_out.self)?.attr.size
            }
        }
        for slot in 0..<16 { XCTAssertEqual(sizes[slot], UInt64(slot % 3 + 1), "slot \(slot)") }
        XCTAssertEqual(uniques.count, 16, "each reply carries its own request's unique")
        XCTAssertEqual(fuse.inFlight, 0)
    }

    func testRequestsInIndirectDescriptorTablesAreServed() throws {
        let rig = try Rig(files: ["hello.txt": "indirect"])
        let fuse = try rig.fuseClient()
        try XCTSkipIf(rig.frontend.ackedFeatures & VhostUserFrontend.featureIndirectDescriptors == 0,
                      "backend does not offer VIRTIO_RING_F_INDIRECT_DESC")
        fuse.useIndirect = true
        try fuse.initialize()
        let entry = try fuse.lookup(name: "hello.txt")
        let file = try fuse.open(node: entry.nodeid)
        XCTAssertEqual(try fuse.read(node: entry.nodeid, handle: file.fh, offset: 0, size: 100), Array("indirect".utf8))
    }

    func testWorksWithoutEventIndexAndWithoutReplyAck() throws {
        var options = VhostUserFrontend.Options()
        options.eventIndex = false
        options.replyAck = false
        let rig = try Rig(options: options, files: ["f": "plain"])
        let fuse = try rig.fuseClient()
        XCTAssertEqual(rig.frontend.ackedFeatures & VhostUserFrontend.featureEventIndex, 0)
        try fuse.initialize()
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 5)
    }

    func testEventIndexIsNegotiatedWhenOffered() throws {
        let rig = try Rig()
        try rig.frontend.handshake()
        let offered = rig.frontend.offeredFeatures & VhostUserFrontend.featureEventIndex
        XCTAssertEqual(rig.frontend.ackedFeatures & VhostUserFrontend.featureEventIndex, offered)
        XCTAssertTrue(rig.frontend.queues.allSatisfy { $0.eventIndex == (offered != 0) })
    }

    func testEmptyNameIsRefusedWithoutHarm() throws {
        let rig = try Rig(files: ["f": "x"])
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        XCTAssertThrowsError(try fuse.lookup(name: ""))
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 1)
    }

    func testStoppingAQueueReportsHowManyChainsTheBackendTook() throws {
        let rig = try Rig(files: ["f": "x"])
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        for _ in 0..<5 { _ = try fuse.getattr(node: UInt64(FUSE_ROOT_ID)) }
        XCTAssertEqual(try rig.frontend.stopQueue(1), 6, "INIT plus five GETATTRs")
    }

    func testClosingTheConnectionEndsTheDaemon() throws {
        let rig = try Rig()
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        rig.frontend.close()
        let exit = rig.daemon.waitForExit(timeoutMilliseconds: 5000)
        XCTAssertNotNil(exit, "daemon still running after its frontend left")
        if case .signalled(let signal)? = exit { XCTFail("daemon died of signal \(signal): \(rig.daemon.logTail())") }
    }
}
