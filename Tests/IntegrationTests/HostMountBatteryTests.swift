import Foundation
import XCTest

/// The C battery (Tests/battery/battery.c) through our daemon's host FUSE mount, against a
/// plain directory on the same host filesystem, in each cache mode. Any difference the
/// battery cannot explain is a failure; the whole output is printed when one happens.
final class HostMountBatteryTests: XCTestCase {
    /// battery.c compiled once per test run.
    static let battery: Result<String, Error> = Result {
        let source = DaemonUnderTest.packageRoot + "/Tests/battery/battery.c"
        let output = NSTemporaryDirectory() + "virtiofsd-battery-\(getpid())"
        guard let gcc = programPath("gcc") else { throw XCTSkip("gcc is not installed") }
        let (status, text) = try runProgram(gcc, ["-O2", "-Wall", "-o", output, source])
        guard status == 0 else {
            throw NSError(domain: "battery", code: Int(status), userInfo: [NSLocalizedDescriptionKey: "gcc failed: \(text)"])
        }
        return output
    }

    override class func tearDown() {
        // (Only where the tests ran: touching `battery` compiles it.)
        if geteuid() == 0, case .success(let path) = battery { try? FileManager.default.removeItem(atPath: path) }
        super.tearDown()
    }

    static func batteryBinary() throws -> String {
        try HostMountDaemon.requireHostMount()
        return try battery.get()
    }

    /// Mounts with `arguments`, runs the battery, stops the daemon and checks it went cleanly.
    private func runBattery(_ arguments: [String], cache: String, writeback: Bool = false,
                            file: StaticString = #filePath, line: UInt = #line) throws {
        let program = try HostMountBatteryTests.batteryBinary()
        let daemon = try HostMountDaemon(arguments: arguments)
        let result = try runProgram(program, [daemon.mountpoint, daemon.plain],
                                    environment: ["BATTERY_CACHE": cache, "BATTERY_WRITEBACK": writeback ? "1" : "0"])
        let summary = result.output.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertTrue(summary.hasSuffix(" 0 failed") && result.status == 0,
                      "battery with \(arguments):\n\(result.output)\n--- daemon log ---\n\(daemon.log())", file: file, line: line)
        XCTAssertGreaterThanOrEqual(result.output.components(separatedBy: "CHECK ").count - 1, 25,
                                    "every check ran:\n\(result.output)", file: file, line: line)
        // Explained differences, for whoever reads the test log.
        for expected in result.output.split(separator: "\n") where expected.contains("expected difference") {
            print("[\(arguments.joined(separator: " "))] \(expected)")
        }
        XCTAssertEqual(daemon.stop(), 0, "SIGTERM must end the daemon with status 0: \(daemon.log())", file: file, line: line)
        XCTAssertTrue(HostMountDaemon.waitUntilUnmounted(daemon.mountpoint), "the mount must be gone after SIGTERM", file: file, line: line)
    }

    func testBatteryMatchesPlainDirectoryWithCacheAuto() throws {
        try runBattery(["--xattr", "--cache=auto"], cache: "auto")
    }

    func testBatteryMatchesPlainDirectoryWithCacheNever() throws {
        try runBattery(["--xattr", "--cache=never"], cache: "never")
    }

    /// Locks handled by the daemon (not only by the kernel's local lock table) and
    /// writes cached in the kernel.
    func testBatteryMatchesPlainDirectoryWithCacheAlwaysWritebackAndDaemonLocks() throws {
        try runBattery(["--xattr", "--cache=always", "--writeback", "-o", "flock,posix_lock"], cache: "always", writeback: true)
    }

    /// Inodes held as file handles and reopened with open_by_handle_at, not as O_PATH descriptors.
    func testBatteryMatchesPlainDirectoryWithInodeFileHandles() throws {
        try runBattery(["--xattr", "--cache=auto", "--inode-file-handles=mandatory"], cache: "auto")
    }

    /// The battery's comparison itself must be able to fail: two plain directories on
    /// different filesystems (ext4 and tmpfs report different sizes) differ.
    func testBatteryReportsDifferences() throws {
        let program = try HostMountBatteryTests.batteryBinary()
        let root = NSTemporaryDirectory() + "battery-self-\(UUID().uuidString.prefix(8))"
        let a = root + "/a", b = "/dev/shm/battery-self-\(getpid())"
        try FileManager.default.createDirectory(atPath: a, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: b, withIntermediateDirectories: true)
        defer {
            try? FileManager.default.removeItem(atPath: root)
            try? FileManager.default.removeItem(atPath: b)
        }
        let result = try runProgram(program, [a, b, "statfs", "rename_plain"])
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertTrue(result.output.contains("CHECK statfs FAIL"), result.output)
        XCTAssertTrue(result.output.contains("CHECK rename_plain PASS"), result.output)
        XCTAssertTrue(result.output.hasSuffix("1 passed, 1 failed\n"), result.output)
    }
}
