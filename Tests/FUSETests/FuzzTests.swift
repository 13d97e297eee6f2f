import XCTest
import CVirtioFS
import Posix
@testable import FUSE

/// A filesystem that answers nothing: every method is the protocol's ENOSYS default.
struct NullFS: FileSystem {}

/// Random requests must never trap, never write past the writer and never
/// return a length that disagrees with the reply header.
final class FuzzTests: XCTestCase {
    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            // xorshift64*: deterministic, so a failure can be replayed.
            state ^= state >> 12
            state ^= state << 25
            state ^= state >> 27
            return state &* 2_685_821_657_736_338_717
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    func fuzz<FS: FileSystem>(_ server: Server<FS>, seed: UInt64, rounds: Int) {
        var g = Generator(state: seed)
        for round in 0..<rounds {
            var body = (0..<g.below(700)).map { _ in UInt8(truncatingIfNeeded: g.next()) }
            // Names are more interesting with NULs in them.
            if g.below(2) == 0, !body.isEmpty { body[g.below(body.count)] = 0 }
            // DESTROY would end the session and leave the rest of the run answering EIO.
            let opcode = UInt32(g.below(53))
            var request = Request(rawOpcode: opcode == Opcode.destroy.rawValue ? Opcode.lookup.rawValue : opcode, body)
            request.nodeid = UInt64(g.below(4))
            var bytes = request.bytes
            // Sometimes a lying extension length or header length.
            if g.below(4) == 0 { bytes[36] = UInt8(truncatingIfNeeded: g.next()) }
            if g.below(8) == 0 { bytes[0] = UInt8(truncatingIfNeeded: g.next()) }
            let capacity = [0, 8, 16, 40, 200, 5000, 1 << 20][g.below(7)]
            let reply = send(server, bytes, capacity: capacity)
            XCTAssertLessThanOrEqual(reply.length, capacity, "round \(round)")
            if reply.length > 0 {
                XCTAssertEqual(reply.header.map { Int($0.len) }, reply.length, "round \(round)")
                XCTAssertLessThanOrEqual(reply.error, 0, "round \(round)")
            }
        }
    }

    func testRandomRequestsAgainstANullFilesystem() {
        let server = initializedServer(NullFS())
        fuzz(server, seed: 0x9E37_79B9_7F4A_7C15, rounds: 5000)
    }

    func testRandomRequestsAgainstARecordingFilesystem() {
        let fs = RecordingFS()
        fs.dirEntries = [("x", 2, UInt32(DT_REG), testEntry(2))]
        let server = initializedServer(fs)
        fuzz(server, seed: 42, rounds: 5000)
    }
}
