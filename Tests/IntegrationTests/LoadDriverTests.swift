import Foundation
import XCTest
import VhostUserFrontend

/// The load driver end to end, in short cells: the report has every row and ratio,
/// and a missing daemon is reported while the other targets still run.
final class LoadDriverTests: XCTestCase {
    private func runBench(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let binary = DaemonUnderTest.packageRoot + "/.build/debug/virtiofsd-bench"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary), "build virtiofsd-bench first (swift build)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testReportHasEveryTargetAndRatiosForEachCell() throws {
        let (status, output) = try runBench(["--seconds", "0.2", "--only", "getattr,read 4", "--depths", "1,4",
                                             "--daemon", DaemonUnderTest.binary])
        XCTAssertEqual(status, 0, output)
        for op in ["getattr", "read 4KiB"] {
            for depth in ["1", "4"] {
                for target in ["ours", "reference", "syscalls"] {
                    let row = output.split(separator: "\n").contains { line in
                        line.hasPrefix(op) && line.contains(" \(target) ") &&
                            line.split(separator: " ").contains(Substring(depth)) && !line.contains("FAILED")
                    }
                    XCTAssertTrue(row, "no \(target) row for \(op) at depth \(depth):\n\(output)")
                }
            }
        }
        XCTAssertEqual(output.components(separatedBy: "ours/reference ").count - 1, 4, output)
        XCTAssertFalse(output.contains("ours/reference -"), "every ratio is computed:\n\(output)")
    }

    func testMissingDaemonIsReportedAndTheOtherTargetsStillRun() throws {
        let (status, output) = try runBench(["--seconds", "0.2", "--only", "getattr", "--depths", "1",
                                             "--daemon", "/nonexistent/virtiofsd"])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("ours: not run: no executable at /nonexistent/virtiofsd"), output)
        XCTAssertTrue(output.contains(" reference "), output)
        XCTAssertTrue(output.contains(" syscalls "), output)
        XCTAssertTrue(output.contains("ours/best-other -"), "no ratio without our daemon:\n\(output)")
        let referenceRow = output.split(separator: "\n").first { $0.hasPrefix("getattr") && $0.contains(" reference ") }
        XCTAssertNotNil(referenceRow, output)
        XCTAssertFalse(referenceRow?.contains("FAILED") ?? true, output)
    }

    func testReaddirplusCellReportsDaemonCPUAndMemoryAfterMount() throws {
        let (status, output) = try runBench(["--seconds", "0.3", "--only", "readdirplus", "--depths", "1",
                                             "--rust", "/nonexistent/rust-virtiofsd", "--daemon", DaemonUnderTest.binary])
        XCTAssertEqual(status, 0, output)
        let row = output.split(separator: "\n").first { $0.hasPrefix("readdirplus") && $0.contains(" ours ") }
        let fields = row?.split(separator: " ") ?? []
        // operation depth target ops/s MB/s p50 p99 CPU-us/req
        XCTAssertEqual(fields.count, 8, "\(row ?? "no row"):\n\(output)")
        if fields.count == 8 {
            XCTAssertGreaterThan(Double(fields[3]) ?? 0, 0, "whole listings completed")
            XCTAssertGreaterThan(Double(fields[7]) ?? 0, 0, "the daemon spent CPU on them")
        }
        XCTAssertTrue(output.contains("rust: not run: no executable at /nonexistent/rust-virtiofsd"), output)
        let memory = output.split(separator: "\n").first { $0.hasPrefix("  ours ") && $0.hasSuffix(" MiB") }
        XCTAssertNotNil(memory, "the memory after mount is reported:\n\(output)")
    }

    func testDaemonThatExitsAtStartIsReportedAsFailed() throws {
        let (status, output) = try runBench(["--seconds", "0.2", "--only", "getattr", "--depths", "1",
                                             "--no-reference", "--daemon", "/bin/false"])
        XCTAssertEqual(status, 0, output)
        XCTAssertTrue(output.contains("ours: FAILED to start"), output)
        XCTAssertTrue(output.contains(" syscalls "), output)
    }
}
