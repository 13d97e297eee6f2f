import Foundation
import XCTest

/// `virtiofsd-bench --footprint`: binary size and resident memory of each daemon,
/// idle and after a frontend connects.
final class FootprintTests: XCTestCase {
    private func runFootprint(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let binary = DaemonUnderTest.packageRoot + "/.build/debug/virtiofsd-bench"
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary), "build virtiofsd-bench first (swift build)")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--footprint"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// The row of `label`, split into columns, or nil.
    private func row(_ label: String, in output: String) -> [Substring]? {
        output.split(separator: "\n").first { $0.hasPrefix(label + " ") }.map { $0.split(separator: " ") }
    }

    func testReportsSizeAndResidentMemoryForEachDaemon() throws {
        let (status, output) = try runFootprint(["--daemon", DaemonUnderTest.binary])
        XCTAssertEqual(status, 0, output)
        for label in ["ours", "reference"] {
            guard let columns = row(label, in: output) else {
                XCTFail("no \(label) row:\n\(output)")
                continue
            }
            XCTAssertFalse(columns.contains("FAILED"), output)
            // target, binary MB, processes, idle RSS MiB, connected RSS MiB, threads
            XCTAssertEqual(columns.count, 6, output)
            let numbers = columns.dropFirst().compactMap { Double($0) }
            XCTAssertEqual(numbers.count, 5, output)
            XCTAssertGreaterThan(numbers[0], 0, "binary size:\n\(output)")
            XCTAssertGreaterThanOrEqual(numbers[1], 1, "process count:\n\(output)")
            // A live daemon holds at least its code: more than 0.5 MiB, idle and connected.
            XCTAssertGreaterThan(numbers[2], 0.5, "idle RSS:\n\(output)")
            XCTAssertGreaterThan(numbers[3], 0.5, "connected RSS:\n\(output)")
            XCTAssertGreaterThanOrEqual(numbers[4], 2, "a connected daemon runs queue threads:\n\(output)")
        }
    }

    func testDaemonThatCannotStartIsReportedAsFailed() throws {
        let (status, output) = try runFootprint(["--no-reference", "--daemon", "/bin/false"])
        XCTAssertEqual(status, 0, output)
        XCTAssertNotNil(row("ours", in: output).flatMap { $0.contains("FAILED:") ? $0 : nil }, output)
        XCTAssertNil(row("reference", in: output), output)
    }
}
