import Foundation
import XCTest
import CVirtioFS
import VhostUserFrontend

/// A guest that opens directories and never releases them must not grow the
/// daemon's memory by a buffer per handle: the bound is the descriptor limit
/// times what one handle costs, and a handle must cost little.
final class DirectoryMemoryTests: XCTestCase {
    /// The resident memory (VmRSS, KiB) of `root` and every process below it.
    /// OPENDIR of the root, then one READDIR on the new handle, which is never released.
    private func openAndRead(_ client: FuseClient) throws {
        let open = try client.call(.raw(opcode: FUSE_OPENDIR.rawValue, node: UInt64(FUSE_ROOT_ID),
                                        body: withUnsafeBytes(of: fuse_open_in(flags: UInt32(O_RDONLY), open_flags: 0)) { Array($0) },
                                        replyCapacity: MemoryLayout<fuse_open_out>.size))
        try open.check()
        guard let handle = open.decode(fuse_open_out.self)?.fh else { return XCTFail("OPENDIR reply too short") }
        var read = fuse_read_in()
        read.fh = handle
        read.size = 4096
        let listing = try client.call(.raw(opcode: FUSE_READDIR.rawValue, node: UInt64(FUSE_ROOT_ID),
                                           body: withUnsafeBytes(of: read) { Array($0) }, replyCapacity: 4096))
        try listing.check()
        XCTAssertGreaterThan(listing.payload.count, 0, "the listing holds at least . and ..")
    }

    func testFiveThousandUnreleasedDirectoriesCostUnder32MiB() throws {
        var files: [String: String] = [:]
        for n in 0..<64 { files["entry-\(n)"] = "x" }
        let rig = try Rig(files: files)
        let client = try rig.fuseClient()
        try client.initialize()
        // Let one-time costs (thread stacks, first allocations) land before the baseline.
        for _ in 0..<100 { try openAndRead(client) }
        let before = processTreeStatusTotal(field: "VmRSS", root: rig.daemon.pid)
        for _ in 0..<5_000 { try openAndRead(client) }
        let after = processTreeStatusTotal(field: "VmRSS", root: rig.daemon.pid)
        XCTAssertGreaterThan(before, 0, "the daemon's memory is readable")
        XCTAssertLessThan(after - before, 32 << 10,
                          "5,000 open directories grew the daemon from \(before) KiB to \(after) KiB")
    }
}

/// The namespace sandbox's parent only waits for the serving child: it must not keep
/// the megabytes of code pages that start-up touched before the fork.
final class WaitingParentMemoryTests: XCTestCase {
    func testWaitingParentGivesBackStartUpCodePages() throws {
        try XCTSkipIf(DaemonUnderTest.isReference, "our daemon's parent")
        let rig = try Rig()
        let client = try rig.fuseClient()
        try client.initialize()
        usleep(200_000)
        guard let status = try? String(contentsOfFile: "/proc/\(rig.daemon.pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssFile:") }),
              let kib = Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" })[1]) else {
            return XCTFail("cannot read the parent's memory")
        }
        // Before: the fork's copy of every page start-up touched, 6 MiB and more.
        XCTAssertLessThan(kib, 3 << 10, "the waiting parent holds \(kib) KiB of file pages")
    }
}
