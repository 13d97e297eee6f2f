import Foundation
import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// Our daemon started with exactly the arguments a test gives (no defaults added),
/// stdout and stderr in separate files, optionally inheriting a listening socket as
/// descriptor `inheritedFD` (libvirt's `--fd=N`).
final class SpawnedDaemon {
    let pid: pid_t
    let stdoutPath: String
    let stderrPath: String
    private(set) var exit: ProcessExit?

    /// Our binary only: these tests check our command line, sandbox and exit statuses.
    static var binary: String { DaemonUnderTest.packageRoot + "/.build/debug/virtiofsd" }

    init(_ arguments: [String], in directory: URL, inherit: (fd: Int32, as: Int32)? = nil) throws {
        let tag = UUID().uuidString.prefix(6)
        stdoutPath = directory.appendingPathComponent("stdout-\(tag)").path
        stderrPath = directory.appendingPathComponent("stderr-\(tag)").path
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if let inherit {
            // dup2 onto a different number leaves the copy without FD_CLOEXEC.
            precondition(inherit.fd != inherit.as, "pick a target descriptor other than the source")
            posix_spawn_file_actions_adddup2(&actions, inherit.fd, inherit.as)
        }
        let path = Self.binary
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, path, &actions, nil, argv, environ)
        guard result == 0 else { throw Errno(result) }
        pid = child
    }

    deinit { stop() }

    var isRunning: Bool {
        if exit != nil { return false }
        if let status = try? Sys.waitProcess(pid, block: false) {
            exit = ProcessExit(waitStatus: status)
            return false
        }
        return true
    }

    /// Waits up to `milliseconds` for the process to end; nil while it still runs.
    @discardableResult
    func waitForExit(milliseconds: Int) -> ProcessExit? {
        let deadline = Sys.monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        while isRunning {
            if Sys.monotonicNanoseconds() > deadline { return nil }
            usleep(5_000)
        }
        return exit
    }

    /// SIGTERM, then SIGKILL if it lingers; reaps.
    func stop() {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        if waitForExit(milliseconds: 2000) != nil { return }
        kill(pid, SIGKILL)
        if let status = try? Sys.waitProcess(pid, block: true) { exit = ProcessExit(waitStatus: status) }
    }

    var standardOutput: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    var standardError: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Waits until `path` is a socket file; false if the daemon ended or time ran out first.
    func waitForSocket(_ path: String, milliseconds: Int = 10_000) -> Bool {
        let deadline = Sys.monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        var st = stat()
        while stat(path, &st) != 0 || (st.st_mode & S_IFMT) != S_IFSOCK {
            if !isRunning || Sys.monotonicNanoseconds() > deadline { return false }
            usleep(5_000)
        }
        return true
    }

    /// The process that serves: in namespace mode the child the started process forked
    /// (PID 1 of the new pid namespace), else the started process itself.
    func servingPID(namespaceMode: Bool, milliseconds: Int = 5000) -> pid_t? {
        guard namespaceMode else { return pid }
        let deadline = Sys.monotonicNanoseconds() + UInt64(milliseconds) * 1_000_000
        while Sys.monotonicNanoseconds() < deadline {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            for task in tasks {
                let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? ""
                if let first = text.split(separator: " ").first, let child = pid_t(first.trimmingCharacters(in: .whitespacesAndNewlines)) {
                    return child
                }
            }
            usleep(5_000)
        }
        return nil
    }
}

/// A scratch directory with a shared subdirectory; removed at the end.
final class Scratch {
    let directory: URL
    let shared: URL
    var socketPath: String { directory.appendingPathComponent("vhost.sock").path }

    init(sharedName: String = "shared", files: [String: String] = [:]) throws {
        if geteuid() != 0 { throw XCTSkip("the daemon's sandbox needs root") }
        guard FileManager.default.isExecutableFile(atPath: SpawnedDaemon.binary) else {
            throw XCTSkip("build the daemon first (swift build)")
        }
        directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("vdt-\(UUID().uuidString.prefix(8))")
        shared = directory.appendingPathComponent(sharedName)
        try FileManager.default.createDirectory(at: shared, withIntermediateDirectories: true)
        for (name, content) in files {
            try content.write(to: shared.appendingPathComponent(name), atomically: false, encoding: .utf8)
        }
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }
}

/// Connects a frontend, completes the vhost-user handshake and FUSE INIT.
/// The socket file appears at bind(), a moment before listen(): a refused connection
/// is retried for a while.
func connectAndInitialize(_ socketPath: String) throws -> (VhostUserFrontend, FuseClient) {
    let deadline = Date().addingTimeInterval(5)
    var connected: VhostUserFrontend?
    while connected == nil {
        let attempt = Result { () throws(FrontendError) -> VhostUserFrontend in
            try VhostUserFrontend(socketPath: socketPath, memorySize: 64 << 20)
        }
        switch attempt {
        case .success(let frontend):
            connected = frontend
        case .failure(let error):
            guard case .system(_, let errno) = error, errno == Errno(ECONNREFUSED), Date() < deadline else { throw error }
            usleep(10_000)
        }
    }
    guard let frontend = connected else { throw FrontendError.timedOut("connect \(socketPath)") }
    try frontend.handshake()
    let fuse = try FuseClient(frontend: frontend, queue: 1, slots: 2, maxData: 1 << 16)
    try fuse.initialize()
    return (frontend, fuse)
}

/// Option errors against the binary: one line on stderr naming the option, exit 1,
/// nothing created; and `--print-capabilities` wins over anything else.
final class DaemonCommandLineTests: XCTestCase {
    private func expectOptionError(_ arguments: (Scratch) -> [String], naming words: [String],
                                   file: StaticString = #filePath, line: UInt = #line) throws {
        let scratch = try Scratch()
        let daemon = try SpawnedDaemon(arguments(scratch), in: scratch.directory)
        guard let exit = daemon.waitForExit(milliseconds: 5000) else {
            return XCTFail("daemon kept running", file: file, line: line)
        }
        XCTAssertEqual(exit, .exited(1), file: file, line: line)
        let lines = daemon.standardError.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        XCTAssertEqual(lines.count, 1, "stderr: \(daemon.standardError)", file: file, line: line)
        let text = daemon.standardError
        XCTAssertTrue(words.contains { text.contains($0) }, "stderr names none of \(words): \(text)", file: file, line: line)
        XCTAssertEqual(daemon.standardOutput, "", file: file, line: line)
        XCTAssertFalse(scratch.exists(scratch.socketPath), "an option error must not leave a socket", file: file, line: line)
    }

    func testUnknownOptionIsOneLineAndExitOne() throws {
        try expectOptionError({ ["--socket-path=\($0.socketPath)", "-o", "source=\($0.shared.path)", "--no-such-option"] },
                              naming: ["--no-such-option"])
    }

    func testUnknownDashOSubOptionIsOneLineAndExitOne() throws {
        try expectOptionError({ ["--socket-path=\($0.socketPath)", "-o", "source=\($0.shared.path),no_such_thing"] },
                              naming: ["no_such_thing"])
    }

    func testFdTogetherWithSocketPathIsRefused() throws {
        try expectOptionError({ ["--fd=3", "--socket-path=\($0.socketPath)", "-o", "source=\($0.shared.path)"] },
                              naming: ["--fd"])
    }

    func testMissingSharedDirectoryIsRefused() throws {
        try expectOptionError({ ["--socket-path=\($0.socketPath)", "-o", "source=\($0.directory.path)/missing"] },
                              naming: ["source", "shared directory"])
        try expectOptionError({ ["--socket-path=\($0.socketPath)", "--shared-dir=\($0.directory.path)/missing"] },
                              naming: ["shared-dir", "shared directory"])
    }

    func testBadCacheValueIsRefusedInBothSpellings() throws {
        try expectOptionError({ ["--socket-path=\($0.socketPath)", "-o", "source=\($0.shared.path)", "-o", "cache=sometimes"] },
                              naming: ["cache"])
        try expectOptionError({ ["--socket-path=\($0.socketPath)", "--shared-dir=\($0.shared.path)", "--cache=sometimes"] },
                              naming: ["--cache"])
    }

    func testUnknownModcapsNameIsRefusedBeforeTheSocketExists() throws {
        try expectOptionError({ ["--socket-path=\($0.socketPath)", "-o", "source=\($0.shared.path)", "--modcaps=-no_such_cap"] },
                              naming: ["modcaps"])
    }

    func testUnknownModcapsErrorNamesTheOptionAndTheCapability() throws {
        let scratch = try Scratch()
        let daemon = try SpawnedDaemon(["--socket-path=\(scratch.socketPath)", "--shared-dir=\(scratch.shared.path)",
                                        "--modcaps=+chown:-CAP_No_Such_Cap"], in: scratch.directory)
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(1))
        XCTAssertTrue(daemon.standardError.hasPrefix("virtiofsd: --modcaps: unknown capability \"no_such_cap\";"),
                      daemon.standardError)
    }

    func testPrintCapabilitiesIsValidJSONEvenAmongBadOptions() throws {
        let scratch = try Scratch()
        let daemon = try SpawnedDaemon(["--bogus", "--print-capabilities", "-o", "cache=sometimes", "--fd=3",
                                        "--socket-path=\(scratch.socketPath)"], in: scratch.directory)
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(0))
        let json = try JSONSerialization.jsonObject(with: Data(daemon.standardOutput.utf8)) as? [String: Any]
        XCTAssertEqual(json?["type"] as? String, "fs", daemon.standardOutput)
        XCTAssertFalse(scratch.exists(scratch.socketPath))
    }

    func testSecondDaemonOnALiveSocketRefusesAndTheFirstKeepsServing() throws {
        let scratch = try Scratch(files: ["f": "first"])
        let first = try SpawnedDaemon(["--socket-path=\(scratch.socketPath)", "-o", "source=\(scratch.shared.path)"],
                                      in: scratch.directory)
        XCTAssertTrue(first.waitForSocket(scratch.socketPath), first.standardError)
        let second = try SpawnedDaemon(["--socket-path=\(scratch.socketPath)", "-o", "source=\(scratch.shared.path)"],
                                       in: scratch.directory)
        XCTAssertEqual(second.waitForExit(milliseconds: 5000), .exited(1))
        // Start-up log lines come first; the error itself is one line.
        XCTAssertEqual(second.standardError.split(separator: "\n").filter { $0.hasPrefix("virtiofsd: ") }.count, 1,
                       second.standardError)
        XCTAssertTrue(second.standardError.contains(scratch.socketPath), second.standardError)
        // The refused start must not have removed or replaced the first daemon's socket.
        let (frontend, fuse) = try connectAndInitialize(scratch.socketPath)
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 5)
        frontend.close()
        XCTAssertEqual(first.waitForExit(milliseconds: 5000), .exited(0), first.standardError)
    }

    func testStaleSocketFileIsReplaced() throws {
        let scratch = try Scratch(files: ["f": "fresh"])
        // A socket file nobody listens on any more, as a killed daemon leaves behind.
        let stale = try Sys.unixStreamSocket()
        try Sys.bind(stale, try Sys.unixAddress(scratch.socketPath))
        Sys.close(stale)
        XCTAssertTrue(scratch.exists(scratch.socketPath))
        let daemon = try SpawnedDaemon(["--socket-path=\(scratch.socketPath)", "-o", "source=\(scratch.shared.path)"],
                                       in: scratch.directory)
        // The stale file is already there, so wait for a connection rather than for the file.
        var connected: (VhostUserFrontend, FuseClient)?
        let deadline = Date().addingTimeInterval(10)
        while connected == nil, Date() < deadline, daemon.isRunning {
            connected = try? connectAndInitialize(scratch.socketPath)
            if connected == nil { usleep(20_000) }
        }
        guard let (frontend, fuse) = connected else { return XCTFail("never connected: \(daemon.standardError)") }
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 5)
        frontend.close()
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(0), daemon.standardError)
    }
}
