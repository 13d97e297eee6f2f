import Foundation
import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// Every daemon command line shown in the README, the man page and docs/operations.md
/// is run by the real binary: with its paths replaced by scratch ones, it must get as far
/// as waiting for its frontend (or mounting, for --fuse-mount), then stop cleanly.
final class DocumentationExampleTests: XCTestCase {
    static let documents = ["README.md", "docs/virtiofsd.1", "docs/operations.md"]

    /// The command lines in `text`: lines that run virtiofsd with options, with roff
    /// escapes undone and continuation lines joined.
    static func commandLines(in text: String, roff: Bool) -> [String] {
        var lines: [String] = []
        var pending: String? = nil
        for raw in text.split(separator: "\n", omittingEmptySubsequences: false) {
            var line = String(raw)
            if roff && pending == nil && line.hasPrefix(".") { continue }  // a macro line (.B virtiofsd ...)
            if roff { line = line.replacingOccurrences(of: "\\-", with: "-").replacingOccurrences(of: "\\e", with: "\\") }
            if var current = pending {
                current += " " + line.trimmingCharacters(in: .whitespaces)
                pending = current
            } else if let range = line.range(of: #"(^|[`/ ])virtiofsd (--|-o )"#, options: .regularExpression) {
                pending = String(line[range]).drop { $0 == "`" || $0 == " " }.description + line[range.upperBound...]
                pending = pending.map { $0.hasPrefix("/") ? String($0.drop { $0 != "v" }) : $0 }
            } else {
                continue
            }
            if pending?.hasSuffix("\\") == true {
                pending?.removeLast()
                continue
            }
            if var done = pending {
                if let tick = done.firstIndex(of: "`") { done = String(done[..<tick]) }
                if done.hasSuffix("&") { done.removeLast() }
                lines.append(done.trimmingCharacters(in: .whitespaces))
            }
            pending = nil
        }
        return lines
    }

    func testTheDocumentsShowTheExamplesThisTestRuns() throws {
        var all: [String] = []
        for document in Self.documents {
            let text = try String(contentsOfFile: DaemonUnderTest.packageRoot + "/" + document, encoding: .utf8)
            all += Self.commandLines(in: text, roff: document.hasSuffix(".1"))
        }
        // README: the recipe and libvirt's command line; man page: four; operations: two.
        XCTAssertEqual(all.count, 8, all.joined(separator: "\n"))
        XCTAssertTrue(all.contains { $0.contains("--num-request-queues=4") }, "the README recipe")
        XCTAssertTrue(all.contains { $0.contains("--fuse-mount") })
        XCTAssertTrue(all.contains { $0.contains("--fd=") })
    }

    func testEveryDocumentedCommandLineStartsAndStopsCleanly() throws {
        for document in Self.documents {
            let text = try String(contentsOfFile: DaemonUnderTest.packageRoot + "/" + document, encoding: .utf8)
            for line in Self.commandLines(in: text, roff: document.hasSuffix(".1")) {
                try run(line, from: document)
            }
        }
    }

    /// The example's arguments with this test's paths in place of the documented ones.
    private func arguments(_ line: String, scratch: Scratch, mountpoint: String) -> (args: [String], fd: Int32?) {
        var words = line.replacingOccurrences(of: "\"", with: "").split(separator: " ").map(String.init)
        words.removeFirst()  // "virtiofsd"
        var fd: Int32? = nil
        let stats = scratch.directory.appendingPathComponent("stats.sock").path
        let args = words.map { word -> String in
            func value(_ option: String, _ replacement: String) -> String? {
                word.hasPrefix(option + "=") ? option + "=" + replacement : nil
            }
            if let w = value("--shared-dir", scratch.shared.path) { return w }
            if let w = value("--socket-path", scratch.socketPath) { return w }
            if let w = value("--socket", scratch.socketPath) { return w }
            if let w = value("--stats", stats) { return w }
            if let w = value("--fuse-mount", mountpoint) { return w }
            if let w = value("--socket-group", "root") { return w }
            if let w = value("--tag", "myfs") { return w }
            if word.hasPrefix("--fd=") {
                fd = Int32(word.dropFirst(5)) ?? 3
                return "--fd=\(fd!)"
            }
            if word.hasPrefix("source=") {
                // The rest of the -o list stays as documented.
                let rest = word.split(separator: ",", maxSplits: 1).dropFirst().first.map { "," + $0 } ?? ""
                return "source=" + scratch.shared.path + rest
            }
            return word
        }
        return (args, fd)
    }

    private func run(_ line: String, from document: String) throws {
        let scratch = try Scratch(files: ["f": "x"])
        let mountpoint = scratch.directory.appendingPathComponent("mnt").path
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        let (args, fd) = arguments(line, scratch: scratch, mountpoint: mountpoint)
        var listener: Int32 = -1
        if fd != nil {
            listener = try Sys.unixStreamSocket()
            try Sys.bind(listener, try Sys.unixAddress(scratch.socketPath))
            try Sys.listen(listener, backlog: 1)
        }
        defer { if listener >= 0 { Sys.close(listener) } }
        let daemon = try SpawnedDaemon(args, in: scratch.directory, inherit: fd.map { (fd: listener, as: $0) })
        let ready = args.contains { $0.hasPrefix("--fuse-mount") } ? "host FUSE mount at" : "waiting for the vhost-user frontend"
        let deadline = Date().addingTimeInterval(10)
        while !daemon.standardError.contains(ready), daemon.isRunning, Date() < deadline { usleep(20_000) }
        XCTAssertTrue(daemon.standardError.contains(ready), "\(document): \(line)\n\(daemon.standardError)")
        if ready.hasPrefix("host") { usleep(200_000) }
        kill(daemon.pid, SIGTERM)
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(0), "\(document): \(line)\n\(daemon.standardError)")
    }
}
