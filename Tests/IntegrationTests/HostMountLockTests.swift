import Foundation
import XCTest

/// Lock waits through the host /dev/fuse transport, driven by the guest checks
/// (Tests/e2e/guest/checks.c) run on the host mount: the kernel there does send
/// FUSE_INTERRUPT, so a signal ends a waiting lock with EINTR.
final class HostMountLockTests: XCTestCase {
    static let checks: Result<String, Error> = Result {
        let source = DaemonUnderTest.packageRoot + "/Tests/e2e/guest/checks.c"
        let output = NSTemporaryDirectory() + "virtiofsd-checks-\(getpid())"
        guard let gcc = programPath("gcc") else { throw XCTSkip("gcc is not installed") }
        let (status, text) = try runProgram(gcc, ["-O2", "-o", output, source])
        guard status == 0 else {
            throw NSError(domain: "checks", code: Int(status), userInfo: [NSLocalizedDescriptionKey: "gcc failed: \(text)"])
        }
        return output
    }

    override class func tearDown() {
        if geteuid() == 0, case .success(let path) = checks { try? FileManager.default.removeItem(atPath: path) }
        super.tearDown()
    }

    private func run(_ check: String, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        try HostMountDaemon.requireHostMount()
        let program = try HostMountLockTests.checks.get()
        let daemon = try HostMountDaemon(arguments: ["-o", "posix_lock,flock"])
        let result = try runProgram(program, ["--dir", daemon.mountpoint, "--host", "--locks", "--only", check])
        XCTAssertEqual(result.status, 0, "\(result.output)\n--- daemon log ---\n\(daemon.log())", file: file, line: line)
        XCTAssertEqual(daemon.stop(), 0, "SIGTERM must end the daemon with status 0: \(daemon.log())", file: file, line: line)
        return result.output
    }

    func testWaitingRecordLockLeavesTheMountServingAndASignalInterruptsIt() throws {
        XCTAssertTrue(try run("lock_wait_fcntl").contains("CHECK lock_wait_fcntl PASS the signal ended the wait with EINTR"))
    }

    func testWaitingFlockLeavesTheMountServingAndASignalInterruptsIt() throws {
        XCTAssertTrue(try run("lock_wait_flock").contains("CHECK lock_wait_flock PASS the signal ended the wait with EINTR"))
    }
}
