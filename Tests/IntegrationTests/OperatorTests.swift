import Foundation
import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// What an operator sees of the real binary: the advice and exit status when QEMU uses
/// more request queues than offered, why the daemon stopped, the statistics socket and
/// SIGUSR1, request lines at debug, syslog naming, and options that must start.
final class OperatorTests: XCTestCase {
    private func start(_ extra: [String], scratch: Scratch) throws -> SpawnedDaemon {
        let daemon = try SpawnedDaemon(["--socket-path=\(scratch.socketPath)", "--shared-dir=\(scratch.shared.path)"] + extra,
                                       in: scratch.directory)
        XCTAssertTrue(daemon.waitForSocket(scratch.socketPath), daemon.standardError)
        return daemon
    }

    func testMoreRequestQueuesThanOfferedFailsWithAdvice() throws {
        let scratch = try Scratch()
        let daemon = try start(["--num-request-queues=1"], scratch: scratch)
        // As QEMU does: no look at GET_QUEUE_NUM, four request queues set up anyway.
        var options = VhostUserFrontend.Options()
        options.checkQueueCount = false
        let frontend = try VhostUserFrontend(socketPath: scratch.socketPath, memorySize: 16 << 20,
                                             requestQueues: 4, options: options)
        XCTAssertThrowsError(try frontend.handshake())
        frontend.close()
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(1), daemon.standardError)
        let log = daemon.standardError
        XCTAssertTrue(log.contains("queue index 2 out of range"), log)
        XCTAssertTrue(log.contains("the frontend uses more request queues than offered (1)"), log)
        XCTAssertTrue(log.contains("--num-request-queues=N"), log)
    }

    func testEachStopSignalIsNamedAndEndsWithZero() throws {
        for (signal, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT"), (SIGHUP, "SIGHUP")] {
            for connected in [false, true] {
                let scratch = try Scratch(files: ["f": "x"])
                let daemon = try start([], scratch: scratch)
                var frontend: VhostUserFrontend? = nil
                if connected {
                    let (f, fuse) = try connectAndInitialize(scratch.socketPath)
                    XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 1)
                    frontend = f
                } else {
                    XCTAssertNotNil(daemon.servingPID(namespaceMode: true))
                }
                kill(daemon.pid, signal)
                XCTAssertEqual(daemon.waitForExit(milliseconds: 3000), .exited(0), "\(name): \(daemon.standardError)")
                XCTAssertTrue(daemon.standardError.contains("stopped by \(name)"), "\(name): \(daemon.standardError)")
                XCTAssertTrue(daemon.standardError.contains("statistics (at exit)"), daemon.standardError)
                frontend?.close()
            }
        }
    }

    func testTheServingProcessHoldsNoDescriptorOfTheSocketDirectory() throws {
        // The namespace parent keeps the socket's directory open to remove the file at the
        // end; the sandboxed child must not have it.
        let scratch = try Scratch()
        let daemon = try start([], scratch: scratch)
        guard let child = daemon.servingPID(namespaceMode: true) else { return XCTFail("no serving child") }
        usleep(200_000)
        let parentHolds = openPaths(daemon.pid).contains(scratch.directory.path)
        XCTAssertTrue(parentHolds, "the parent holds the directory: \(openPaths(daemon.pid))")
        XCTAssertFalse(openPaths(child).contains(scratch.directory.path), "\(openPaths(child))")
        daemon.stop()
    }

    private func openPaths(_ pid: pid_t) -> [String] {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
        return fds.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)") }
    }

    func testOnlyOurOwnSocketFileIsRemoved() throws {
        // A daemon that finds its path taken over by a newer socket leaves that one alone.
        let scratch = try Scratch()
        let daemon = try start([], scratch: scratch)
        XCTAssertNotNil(daemon.servingPID(namespaceMode: true))
        unlink(scratch.socketPath)
        let successor = try Sys.unixStreamSocket()
        defer { Sys.close(successor) }
        try Sys.bind(successor, try Sys.unixAddress(scratch.socketPath))
        kill(daemon.pid, SIGTERM)
        XCTAssertEqual(daemon.waitForExit(milliseconds: 3000), .exited(0), daemon.standardError)
        XCTAssertTrue(scratch.exists(scratch.socketPath), "the successor's socket stays")
    }

    func testAFrontendThatGoesAwayReadsDifferentlyFromAStop() throws {
        let scratch = try Scratch(files: ["f": "x"])
        let daemon = try start([], scratch: scratch)
        let (frontend, fuse) = try connectAndInitialize(scratch.socketPath)
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 1)
        frontend.close()
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(0), daemon.standardError)
        XCTAssertTrue(daemon.standardError.contains("the frontend closed the connection"), daemon.standardError)
        XCTAssertFalse(daemon.standardError.contains("stopped by"), daemon.standardError)
    }

    func testStatisticsSocketRoundTripAndSigusr1() throws {
        let scratch = try Scratch(files: ["f": "x"])
        let statsPath = scratch.directory.appendingPathComponent("stats.sock").path
        let daemon = try start(["--stats=\(statsPath)"], scratch: scratch)
        let (frontend, fuse) = try connectAndInitialize(scratch.socketPath)
        defer { frontend.close() }
        for _ in 0..<3 { XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 1) }
        XCTAssertThrowsError(try fuse.lookup(name: "missing"))
        // Read while running: through the descriptor kept across pivot_root.
        let text = try readStats(statsPath)
        let lines = text.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "virtiofsd-statistics 1", text)
        let lookup = lines.first { $0.hasPrefix("op LOOKUP ") } ?? ""
        XCTAssertTrue(lookup.hasPrefix("op LOOKUP requests 4 errors 1 p50_us "), text)
        XCTAssertTrue(lines.contains("errno ENOENT 1"), text)
        XCTAssertTrue(lines.contains { $0.hasPrefix("queue 1 requests ") }, text)
        XCTAssertTrue(lines.contains { $0.hasPrefix("inodes ") }, text)
        // SIGUSR1 to the pid that was started: logged, and the daemon serves on.
        kill(daemon.pid, SIGUSR1)
        let deadline = Date().addingTimeInterval(3)
        while !daemon.standardError.contains("statistics (SIGUSR1)"), Date() < deadline { usleep(20_000) }
        XCTAssertTrue(daemon.standardError.contains("statistics (SIGUSR1)"), daemon.standardError)
        XCTAssertTrue(daemon.standardError.contains("op LOOKUP requests 4"), daemon.standardError)
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 1)
        XCTAssertTrue(daemon.isRunning)
    }

    private func readStats(_ path: String) throws -> String {
        let fd = try Sys.unixStreamSocket()
        defer { Sys.close(fd) }
        try Sys.connect(fd, try Sys.unixAddress(path))
        var text = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try buffer.withUnsafeMutableBytes { b throws(Errno) in try Sys.recv(fd, b) }
            if n <= 0 { break }
            text += buffer[0..<n]
        }
        return String(decoding: text, as: UTF8.self)
    }

    func testDebugLinesNameTheRequest() throws {
        let scratch = try Scratch(files: ["f": "x"])
        let daemon = try start(["--log-level=debug"], scratch: scratch)
        let (frontend, fuse) = try connectAndInitialize(scratch.socketPath)
        XCTAssertThrowsError(try fuse.lookup(name: "nope"))
        frontend.close()
        daemon.waitForExit(milliseconds: 5000)
        let line = daemon.standardError.split(separator: "\n").first { $0.contains("LOOKUP") && $0.contains("\"nope\"") } ?? ""
        XCTAssertTrue(line.contains("node=1 name=\"nope\" queue=1 -> ENOENT ("), daemon.standardError)
        XCTAssertTrue(line.contains("uid=") && line.contains("pid="), String(line))
        XCTAssertTrue(daemon.standardError.contains("[info] guest mounted: FUSE 7."), daemon.standardError)
    }

    func testUidMapIsHonouredNotRefused() throws {
        // The docs once said the daemon refuses --uid-map; it uses it for the namespace sandbox.
        let scratch = try Scratch(files: ["f": "x"])
        let daemon = try start(["--uid-map=:0:0:1:", "--gid-map=:0:0:1:"], scratch: scratch)
        let (frontend, fuse) = try connectAndInitialize(scratch.socketPath)
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 1)
        frontend.close()
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(0), daemon.standardError)
    }

    func testUnreadableSharedDirectorySaysPermissionDenied() throws {
        guard let setpriv = programPath("setpriv") else { throw XCTSkip("needs setpriv") }
        let scratch = try Scratch()
        // nobody cannot enter root's 0700 directory, so the share below it cannot be reached.
        chmod(scratch.shared.path, 0o700)
        chmod(scratch.directory.path, 0o755)
        let inner = scratch.shared.appendingPathComponent("inner")
        try FileManager.default.createDirectory(at: inner, withIntermediateDirectories: true)
        let result = try runProgram(setpriv, ["--reuid=65534", "--regid=65534", "--clear-groups", SpawnedDaemon.binary,
                                              "--socket-path=/tmp/never-\(getpid()).sock", "--shared-dir=\(inner.path)",
                                              "--sandbox=none"], timeout: 10)
        XCTAssertEqual(result.status, 1, result.output)
        XCTAssertTrue(result.output.contains("shared directory '\(inner.path)': Permission denied"), result.output)
    }

    func testCompatibilitySpellingsStartTheDaemon() throws {
        let scratch = try Scratch(files: ["f": "x"])
        let daemon = try SpawnedDaemon(["--socket=\(scratch.socketPath)", "-o", "source=\(scratch.shared.path),allow_root,max_idle_threads=8"],
                                       in: scratch.directory)
        XCTAssertTrue(daemon.waitForSocket(scratch.socketPath), daemon.standardError)
        XCTAssertTrue(daemon.standardError.contains("'-o allow_root' is accepted for compatibility and has no effect"),
                      daemon.standardError)
        daemon.stop()
    }

    func testDaemonizeReturnsOnceTheSocketListens() throws {
        let scratch = try Scratch(files: ["f": "x"])
        let daemon = try SpawnedDaemon(["--socket-path=\(scratch.socketPath)", "--shared-dir=\(scratch.shared.path)",
                                        "--daemonize"], in: scratch.directory)
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(0), daemon.standardError)
        let (frontend, fuse) = try connectAndInitialize(scratch.socketPath)
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 1)
        frontend.close()  // the background daemon then ends by itself
    }
}
