import XCTest
import Foundation
import CVirtioFS
import Posix
@testable import FUSE

final class LoggingTests: XCTestCase {
    /// Runs `body` with standard error captured (the logger writes there).
    func capturingStandardError(_ body: () -> Void) -> String {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let saved = dup(2)
        dup2(fds[1], 2)
        body()
        dup2(saved, 2)
        close(saved)
        close(fds[1])
        var text = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fds[0], &chunk, chunk.count)
            if n <= 0 { break }
            text += chunk[0..<n]
        }
        close(fds[0])
        return String(decoding: text, as: UTF8.self)
    }

    func testDebugLogNamesOpcodeUniqueNodeAndResult() {
        let fs = RecordingFS()
        let server = Server(filesystem: fs, options: ServerOptions(), logger: Logger(level: .debug))
        let text = capturingStandardError {
            _ = send(server, initRequest(flags: allKernelFlags))
            fs.failure = .noEntry
            var lookup = Request(.lookup, nodeid: 1, cstr("nope"))
            lookup.unique = 1234
            _ = send(server, lookup)
            fs.failure = nil
            var getattr = Request(.getattr, nodeid: 9, bytes(of: fuse_getattr_in()))
            getattr.unique = 1235
            _ = send(server, getattr)
        }
        // Name, caller, queue, errno by name and the time taken.
        let lookupLine = text.split(separator: "\n").first { $0.contains("LOOKUP unique=1234") }.map(String.init) ?? ""
        XCTAssertTrue(lookupLine.contains("LOOKUP unique=1234 uid=1000 pid=4242 node=1 name=\"nope\" queue=0 -> ENOENT ("), text)
        XCTAssertTrue(lookupLine.hasSuffix(" us)"), lookupLine)
        XCTAssertTrue(text.contains("GETATTR unique=1235 uid=1000 pid=4242 node=9 queue=0 -> ok, 104 bytes ("), text)
    }

    func testDebugLogNamesTheResultingNodeAndHandleAndOddNamesSafely() {
        let fs = RecordingFS()
        let server = Server(filesystem: fs, options: ServerOptions(), logger: Logger(level: .debug))
        let text = capturingStandardError {
            _ = send(server, initRequest(flags: allKernelFlags))
            _ = send(server, Request(.lookup, nodeid: 1, cstr("a\"b\n")))
            var read = fuse_read_in()
            read.fh = 77
            read.offset = 4096
            read.size = 100
            _ = send(server, Request(.read, nodeid: 5, bytes(of: read)))
        }
        XCTAssertTrue(text.contains(#"name="a\x22b\x0a""#), text)
        XCTAssertTrue(text.contains("READ unique="), text)
        XCTAssertTrue(text.contains("fh=77 offset=4096 size=100"), text)
    }

    func testMountIsOneInfoLineAndRequestsNothingBelowDebug() {
        let server = Server(filesystem: RecordingFS(), options: ServerOptions(), logger: Logger(level: .info))
        let text = capturingStandardError {
            _ = send(server, initRequest(flags: allKernelFlags))
            _ = send(server, Request(.lookup, cstr("x")))
        }
        let lines = text.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, text)
        XCTAssertTrue(lines.first?.contains("[info] guest mounted: FUSE 7.") ?? false, text)
        XCTAssertTrue(lines.first?.contains("max_pages") ?? false, text)
    }

    func testExhaustedDescriptorsWarnOnceInAWhile() {
        let fs = RecordingFS()
        let server = Server(filesystem: fs, options: ServerOptions(), logger: Logger(level: .warning))
        let text = capturingStandardError {
            _ = send(server, initRequest(flags: allKernelFlags))
            fs.failure = .tooManyOpenFiles
            for _ in 0..<5 { _ = send(server, Request(.lookup, nodeid: 1, cstr("f"))) }
        }
        let warnings = text.split(separator: "\n").filter { $0.contains("[warning]") }
        XCTAssertEqual(warnings.count, 1, text)
        XCTAssertTrue(warnings.first?.contains("LOOKUP failed with EMFILE") ?? false, text)
        XCTAssertTrue(warnings.first?.contains("--rlimit-nofile") ?? false, text)
    }

    func testStatisticsCountRequestsErrorsAndLatency() {
        let fs = RecordingFS()
        let server = Server(filesystem: fs, options: ServerOptions(), logger: .discarding)
        _ = send(server, initRequest(flags: allKernelFlags))
        for _ in 0..<3 { _ = send(server, Request(.getattr, nodeid: 1, bytes(of: fuse_getattr_in()))) }
        fs.failure = .noEntry
        _ = send(server, Request(.lookup, nodeid: 1, cstr("gone")))
        let snapshot = server.statistics.snapshot()
        let getattr = snapshot.operations.first { $0.name == "GETATTR" }
        XCTAssertEqual(getattr?.count, 3)
        XCTAssertEqual(getattr?.errors, 0)
        XCTAssertEqual(getattr?.latencyHistogram.reduce(0, +), 3)
        XCTAssertEqual(snapshot.operations.first { $0.name == "LOOKUP" }?.errors, 1)
        XCTAssertEqual(snapshot.errors.first { $0.0 == "ENOENT" }?.1, 1)
        XCTAssertEqual(snapshot.requests, 5, "INIT counts too")
        XCTAssertGreaterThan(getattr?.percentile(0.99) ?? 0, 0)
    }

    func testPercentilesAreBucketUpperBounds() {
        var op = StatisticsSnapshot.Operation(name: "X", count: 100, errors: 0,
                                              latencyHistogram: [UInt64](repeating: 0, count: 40))
        op.latencyHistogram[10] = 90   // under 1024 ns
        op.latencyHistogram[20] = 10   // under ~1 ms
        XCTAssertEqual(op.percentile(0.5), 1024)
        XCTAssertEqual(op.percentile(0.9), 1024)
        XCTAssertEqual(op.percentile(0.99), 1 << 20)
        XCTAssertEqual(op.percentile(1.0), 1 << 20)
    }

    func testErrnoNames() {
        XCTAssertEqual(errnoName(.noEntry), "ENOENT")
        XCTAssertEqual(errnoName(.nameTooLong), "ENAMETOOLONG")
        XCTAssertEqual(errnoName(Errno(4000)), "errno 4000")
    }
}
