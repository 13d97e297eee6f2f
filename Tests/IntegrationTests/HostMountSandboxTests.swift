import Foundation
import XCTest

/// `--fuse-mount` runs in the same sandbox as a vhost-user daemon, and its mount is gone
/// (not left "Transport endpoint is not connected") once the daemon stops.
final class HostMountSandboxTests: XCTestCase {
    static let keptMask = DaemonSandboxTests.keptMask

    func assertSandboxed(_ pid: pid_t, file: StaticString = #filePath, line: UInt = #line) throws {
        let fields = try DaemonSandboxTests.status(pid)
        XCTAssertEqual(fields["Seccomp"], "2", "seccomp filter", file: file, line: line)
        XCTAssertEqual(fields["NoNewPrivs"], "1", file: file, line: line)
        for name in ["CapEff", "CapPrm", "CapBnd"] {
            XCTAssertEqual(fields[name].flatMap { UInt64($0, radix: 16) }, Self.keptMask,
                           "\(name) is \(fields[name] ?? "missing")", file: file, line: line)
        }
    }

    func assertRootIsShare(_ pid: pid_t, _ daemon: HostMountDaemon, file: StaticString = #filePath, line: UInt = #line) {
        let root = DaemonSandboxTests.identity("/proc/\(pid)/root/.")
        let share = DaemonSandboxTests.identity(daemon.share)
        XCTAssertNotNil(root, file: file, line: line)
        XCTAssertTrue(root.map { r in share.map { r == $0 } ?? false } ?? false, "root is not the share", file: file, line: line)
    }

    /// Stops the daemon and waits (bounded) for the mount to go; a dead mount would
    /// still be listed, and stat would fail with ENOTCONN.
    func assertStopsAndUnmounts(_ daemon: HostMountDaemon, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(daemon.stop(), 0, "exit status; log: \(daemon.log())", file: file, line: line)
        XCTAssertTrue(HostMountDaemon.waitUntilUnmounted(daemon.mountpoint), "still mounted after the daemon stopped", file: file, line: line)
        var st = stat()
        XCTAssertEqual(stat(daemon.mountpoint, &st), 0, "stat of the mount point: \(String(cString: strerror(errno)))", file: file, line: line)
    }

    func testNamespaceModeServesTheMountFromTheSandbox() throws {
        let daemon = try HostMountDaemon(arguments: []) { share in
            try "inside".write(toFile: share + "/f", atomically: false, encoding: .utf8)
        }
        XCTAssertEqual(try String(contentsOfFile: daemon.mountpoint + "/f", encoding: .utf8), "inside")
        try "made".write(toFile: daemon.mountpoint + "/g", atomically: false, encoding: .utf8)
        XCTAssertEqual(try String(contentsOfFile: daemon.share + "/g", encoding: .utf8), "made")

        let serving = daemon.servingPID()
        XCTAssertNotEqual(serving, daemon.process.processIdentifier, "namespace mode serves from a forked child")
        try assertSandboxed(serving)
        for kind in ["mnt", "pid", "net"] {
            XCTAssertNotEqual(DaemonSandboxTests.namespace("\(serving)", kind), DaemonSandboxTests.namespace("self", kind),
                              "\(kind) namespace is the host's")
        }
        assertRootIsShare(serving, daemon)
        assertStopsAndUnmounts(daemon)
    }

    func testChrootModeServesTheMountFromTheSandbox() throws {
        let daemon = try HostMountDaemon(arguments: ["--sandbox=chroot"])
        try "made".write(toFile: daemon.mountpoint + "/g", atomically: false, encoding: .utf8)
        XCTAssertEqual(try String(contentsOfFile: daemon.share + "/g", encoding: .utf8), "made")
        let serving = daemon.servingPID()
        XCTAssertEqual(serving, daemon.process.processIdentifier)
        try assertSandboxed(serving)
        assertRootIsShare(serving, daemon)
        assertStopsAndUnmounts(daemon)
    }

    func testSandboxNoneIsTheOptOutAndStillUnmounts() throws {
        let daemon = try HostMountDaemon(arguments: ["--sandbox=none", "--seccomp=none"])
        let serving = daemon.servingPID()
        let fields = try DaemonSandboxTests.status(serving)
        XCTAssertEqual(fields["Seccomp"], "0")
        XCTAssertEqual(DaemonSandboxTests.namespace("\(serving)", "mnt"), DaemonSandboxTests.namespace("self", "mnt"))
        assertStopsAndUnmounts(daemon)
    }

    func testAKilledDaemonLeavesNoDeadMount() throws {
        let daemon = try HostMountDaemon(arguments: [])
        kill(daemon.servingPID(), SIGKILL)
        XCTAssertTrue(HostMountDaemon.waitUntilUnmounted(daemon.mountpoint), "the mount outlived the daemon")
    }
}
