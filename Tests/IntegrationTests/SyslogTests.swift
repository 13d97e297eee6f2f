import Foundation
import XCTest
import CVirtioFS
import Posix

/// `--syslog`: every line goes there, fatal ones included, each named with the tag and
/// the pid that was started (not PID 1 of the namespace); a missing /dev/log is said.
/// Runs only where /dev/log does not exist: the test then plays the syslog daemon.
final class SyslogTests: XCTestCase {
    private var receiver: Int32 = -1

    override func setUpWithError() throws {
        var st = stat()
        if lstat("/dev/log", &st) == 0 { throw XCTSkip("a syslog daemon owns /dev/log here") }
        if geteuid() != 0 { throw XCTSkip("needs root to create /dev/log") }
    }

    override func tearDown() {
        if receiver >= 0 {
            Sys.close(receiver)
            unlink("/dev/log")
            receiver = -1
        }
    }

    private func listen() throws {
        receiver = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        XCTAssertGreaterThanOrEqual(receiver, 0)
        try Sys.bind(receiver, try Sys.unixAddress("/dev/log"))
    }

    /// The datagrams received so far.
    private func received() -> [String] {
        var messages: [String] = []
        var buffer = [UInt8](repeating: 0, count: 8192)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            messages.append(String(decoding: buffer[0..<n], as: UTF8.self))
        }
        return messages
    }

    func testAMissingSyslogSocketIsSaidOnStderr() throws {
        let scratch = try Scratch()
        let daemon = try SpawnedDaemon(["--syslog", "--socket-path=\(scratch.socketPath)", "--shared-dir=\(scratch.shared.path)"],
                                       in: scratch.directory)
        defer { daemon.stop() }
        XCTAssertTrue(daemon.waitForSocket(scratch.socketPath))
        XCTAssertTrue(daemon.standardError.contains("--syslog: no syslog socket at /dev/log"), daemon.standardError)
    }

    func testFatalErrorsReachSyslogNamedWithTheTagAndPid() throws {
        try listen()
        let scratch = try Scratch()
        let missing = scratch.directory.appendingPathComponent("gone").path
        let daemon = try SpawnedDaemon(["--syslog", "--tag=vol1", "--socket-path=\(scratch.socketPath)", "--shared-dir=\(missing)"],
                                       in: scratch.directory)
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(1))
        let messages = received()
        XCTAssertTrue(messages.contains { $0.contains("virtiofsd-vol1[\(daemon.pid)]: shared directory '\(missing)' does not exist") },
                      messages.joined(separator: "\n"))
        XCTAssertTrue(daemon.standardError.contains("does not exist"), "and on stderr: \(daemon.standardError)")
    }

    func testLinesAfterTheSandboxCarryTheHostPidNotOne() throws {
        try listen()
        let scratch = try Scratch()
        let daemon = try SpawnedDaemon(["--syslog", "--tag=vol2", "--socket-path=\(scratch.socketPath)",
                                        "--shared-dir=\(scratch.shared.path)"], in: scratch.directory)
        XCTAssertTrue(daemon.waitForSocket(scratch.socketPath), daemon.standardError)
        var messages: [String] = []
        let deadline = Date().addingTimeInterval(5)
        while !messages.contains(where: { $0.contains("waiting for the vhost-user frontend") }), Date() < deadline {
            messages += received()
            usleep(20_000)
        }
        kill(daemon.pid, SIGTERM)
        XCTAssertEqual(daemon.waitForExit(milliseconds: 3000), .exited(0))
        messages += received()
        let ident = "virtiofsd-vol2[\(daemon.pid)]: "
        XCTAssertTrue(messages.contains { $0.contains(ident + "sandbox: namespaces entered") }, messages.joined(separator: "\n"))
        XCTAssertTrue(messages.contains { $0.contains(ident + "stopped by SIGTERM") }, messages.joined(separator: "\n"))
        XCTAssertFalse(messages.contains { $0.contains("[1]:") }, messages.joined(separator: "\n"))
        XCTAssertTrue(messages.allSatisfy { $0.contains(ident) }, messages.joined(separator: "\n"))
    }
}
