import XCTest
import Glibc
@testable import Posix

final class ChildProcessTests: XCTestCase {
    func testWaitProcessReportsTheExitStatus() throws {
        let pid = try Sys.spawnProcess("/bin/sh", arguments: ["-c", "exit 3"], outputPath: "/dev/null")
        let status = try XCTUnwrap(try Sys.waitProcess(pid, block: true))
        XCTAssertEqual(ProcessExit(waitStatus: status), .exited(3))
    }

    func testWaitProcessIsNilWhileTheChildRunsAndSignalProcessEndsIt() throws {
        let pid = try Sys.spawnProcess("/bin/sleep", arguments: ["30"], outputPath: "/dev/null")
        XCTAssertNil(try Sys.waitProcess(pid, block: false), "still running")
        try Sys.signalProcess(pid, SIGKILL)
        let status = try XCTUnwrap(try Sys.waitProcess(pid, block: true))
        XCTAssertEqual(ProcessExit(waitStatus: status), .signalled(SIGKILL))
        XCTAssertThrowsError(try Sys.signalProcess(pid, 0), "reaped: no such process") {
            XCTAssertEqual($0 as? Errno, Errno(ESRCH))
        }
    }
}
