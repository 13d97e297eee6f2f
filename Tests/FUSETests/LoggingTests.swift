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
        XCTAssertTrue(text.contains("LOOKUP unique=1234 nodeid=1 -> ENOENT"), text)
        XCTAssertTrue(text.contains("GETATTR unique=1235 nodeid=9 -> 120 bytes"), text)
    }

    func testNothingIsLoggedBelowDebug() {
        let server = Server(filesystem: RecordingFS(), options: ServerOptions(), logger: Logger(level: .info))
        let text = capturingStandardError {
            _ = send(server, initRequest(flags: allKernelFlags))
            _ = send(server, Request(.lookup, cstr("x")))
        }
        XCTAssertEqual(text, "")
    }

    func testErrnoNames() {
        XCTAssertEqual(errnoName(.noEntry), "ENOENT")
        XCTAssertEqual(errnoName(.nameTooLong), "ENAMETOOLONG")
        XCTAssertEqual(errnoName(Errno(4000)), "errno 4000")
    }
}
