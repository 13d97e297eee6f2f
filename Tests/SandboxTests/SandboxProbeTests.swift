import Foundation
import Posix
import XCTest

/// Each test starts `sandbox-probe`, which enters the sandbox in a fresh single-threaded
/// process and waits; the test then inspects it from outside through /proc.
/// These need root (CI runs them as root); they skip otherwise.
final class SandboxProbeTests: XCTestCase {
    static let keptMask: UInt64 = 0x8800_00DB

    var share = ""

    override func setUpWithError() throws {
        try XCTSkipUnless(geteuid() == 0, "sandbox probe tests need root")
        share = NSTemporaryDirectory() + "sandbox-share-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: share, withIntermediateDirectories: true)
        chmod(share, 0o755)  // also for the unprivileged runs
        _ = FileManager.default.createFile(atPath: share + "/marker", contents: Data("x".utf8))
    }

    override func tearDown() {
        if !share.isEmpty { try? FileManager.default.removeItem(atPath: share) }
    }

    // MARK: - modes

    func testNamespaceModeIsolatesMountPidAndNetAndRootsAtTheShare() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share])
        defer { probe.finish() }
        let fields = try probe.readyFields()
        XCTAssertEqual(fields["root"], "/")
        XCTAssertEqual(fields["pid"], "1", "the serving process is PID 1 of its own pid namespace")
        XCTAssertEqual(fields["selfroot"], "/")
        XCTAssertNotEqual(fields["procfd"], "none")

        let serving = try XCTUnwrap(probe.servingPID())
        XCTAssertNotEqual(serving, probe.pid, "namespace mode serves from a forked child")
        for ns in ["mnt", "pid", "net"] {
            XCTAssertNotEqual(try nsLink(serving, ns), try nsLink(getpid(), ns), ns)
        }
        XCTAssertEqual(try nsLink(serving, "user"), try nsLink(getpid(), "user"), "root needs no user namespace")
        try assertSameFile("/proc/\(serving)/root", share)
        try assertRestricted(serving, capabilities: Self.keptMask)
        // The old root is detached: the only mount left in view is the share itself.
        XCTAssertEqual(try mountPoints(serving), ["/"])
        // The parent only waits, and holds no capabilities while doing so.
        XCTAssertEqual(try procStatus(probe.pid)["CapEff"].flatMap { UInt64($0, radix: 16) }, 0)
        XCTAssertEqual(try procStatus(probe.pid)["CapBnd"].flatMap { UInt64($0, radix: 16) }, 0)
    }

    func testChrootModeRootsAtTheShareWithoutNewNamespaces() throws {
        let probe = try Probe.start(["--mode", "chroot", "--share", share])
        defer { probe.finish() }
        let fields = try probe.readyFields()
        XCTAssertEqual(fields["root"], "/")
        XCTAssertEqual(fields["selfroot"], "/")
        XCTAssertNotEqual(fields["procfd"], "none", "chroot mode keeps a /proc/self/fd opened before chroot")
        XCTAssertNil(probe.servingPID())
        try assertSameFile("/proc/\(probe.pid)/root", share)
        XCTAssertEqual(try nsLink(probe.pid, "mnt"), try nsLink(getpid(), "mnt"))
        try assertRestricted(probe.pid, capabilities: Self.keptMask)
    }

    func testNoneModeKeepsTheHostRootButStillFiltersAndDropsCapabilities() throws {
        let probe = try Probe.start(["--mode", "none", "--share", share])
        defer { probe.finish() }
        XCTAssertEqual(try probe.readyFields()["root"], share)
        try assertSameFile("/proc/\(probe.pid)/root", "/")
        try assertRestricted(probe.pid, capabilities: Self.keptMask)
    }

    func testModcapsAndFileHandlesChangeTheKeptCapabilities() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share, "--modcaps", "+sys_admin:-mknod", "--keep-dac"])
        defer { probe.finish() }
        _ = try probe.readyFields()
        let serving = try XCTUnwrap(probe.servingPID())
        try assertRestricted(serving, capabilities: (Self.keptMask | 1 << 21 | 1 << 2) & ~(1 << 27))
    }

    func testSeccompNoneInstallsNoFilter() throws {
        let probe = try Probe.start(["--mode", "none", "--share", share, "--seccomp", "none"])
        defer { probe.finish() }
        _ = try probe.readyFields()
        let status = try procStatus(probe.pid)
        XCTAssertEqual(status["Seccomp"], "0")
        XCTAssertEqual(status["NoNewPrivs"], "0")
    }

    // MARK: - escapes through the file system

    /// Host paths, `..` climbs and a symlink planted in the share all stay inside it.
    func assertConfined(mode: String) throws {
        try FileManager.default.createSymbolicLink(atPath: share + "/escape", withDestinationPath: "/etc")
        let tries = ["/marker", "/etc/passwd", "/../../etc/passwd", "../../../etc/passwd", "/escape/passwd"]
        let probe = try Probe.start(["--mode", mode, "--share", share] + tries.flatMap { ["--open", $0] })
        defer { probe.finish() }
        var results: [String] = []
        for _ in tries { results.append(try probe.readLine()) }
        XCTAssertEqual(results, [
            "open /marker: ok",
            "open /etc/passwd: No such file or directory",
            "open /../../etc/passwd: No such file or directory",
            "open ../../../etc/passwd: No such file or directory",
            "open /escape/passwd: No such file or directory",
        ])
        _ = try probe.readyFields()
    }

    func testNamespaceModeConfinesPathsToTheShare() throws {
        try assertConfined(mode: "namespace")
    }

    func testChrootModeConfinesPathsToTheShare() throws {
        try assertConfined(mode: "chroot")
    }

    func testNoneModeDoesNotConfinePaths() throws {
        // The control: the same attempts succeed without a sandbox.
        let probe = try Probe.start(["--mode", "none", "--share", share, "--open", "/etc/passwd"])
        defer { probe.finish() }
        XCTAssertEqual(try probe.readLine(), "open /etc/passwd: ok")
    }

    // MARK: - seccomp actions

    func testForbiddenSyscallKillsTheProcessUnderKill() throws {
        let probe = try Probe.start(["--mode", "none", "--share", share, "--forbidden"])
        let (output, reason, status) = probe.waitForExit()
        XCTAssertTrue(output.contains("calling-forbidden"), output)
        XCTAssertFalse(output.contains("forbidden-returned"), output)
        XCTAssertEqual(reason, .uncaughtSignal)
        XCTAssertEqual(status, SIGSYS)
    }

    func testNamespaceParentEndsTheWayTheServingProcessDid() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share, "--forbidden"])
        let (output, reason, status) = probe.waitForExit()
        XCTAssertTrue(output.contains("calling-forbidden"), output)
        XCTAssertFalse(output.contains("forbidden-returned"), output)
        XCTAssertEqual(reason, .uncaughtSignal)
        XCTAssertEqual(status, SIGSYS)
    }

    func testThreadsCanBeStartedUnderTheFilter() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share, "--thread"])
        defer { probe.finish() }
        _ = try probe.readyFields()
        XCTAssertEqual(try probe.readLine(), "thread-ok")
    }

    func testThreadsThatAlreadyExistAreFilteredToo() throws {
        let probe = try Probe.start(["--mode", "none", "--share", share, "--early-thread"])
        let (output, reason, status) = probe.waitForExit()
        XCTAssertTrue(output.contains("releasing-early-thread"), output)
        XCTAssertFalse(output.contains("early-thread-returned"), output)
        XCTAssertEqual(reason, .uncaughtSignal)
        XCTAssertEqual(status, SIGSYS)
    }

    func testForbiddenSyscallPassesUnderLog() throws {
        let probe = try Probe.start(["--mode", "none", "--share", share, "--seccomp", "log", "--forbidden"])
        defer { probe.finish() }
        _ = try probe.readyFields()
        XCTAssertEqual(try probe.readLine(), "calling-forbidden")
        XCTAssertEqual(try probe.readLine(), "forbidden-returned")
        XCTAssertEqual(try procStatus(probe.pid)["Seccomp"], "2")
    }

    func testForbiddenSyscallRaisesSIGSYSUnderTrap() throws {
        let probe = try Probe.start(["--mode", "none", "--share", share, "--seccomp", "trap", "--forbidden"])
        let (output, reason, status) = probe.waitForExit()
        XCTAssertFalse(output.contains("forbidden-returned"), output)
        XCTAssertEqual(reason, .uncaughtSignal)
        XCTAssertEqual(status, SIGSYS)
    }

    // MARK: - failures and unprivileged starts

    func testUnknownModcapsNameStopsTheStartNamingIt() throws {
        let probe = try Probe.start(["--mode", "none", "--share", share, "--modcaps", "+bogus_cap"])
        let (output, reason, status) = probe.waitForExit()
        XCTAssertEqual(reason, .exit)
        XCTAssertEqual(status, 3)
        XCTAssertTrue(output.contains("unknown capability \"bogus_cap\""), output)
    }

    func testUnprivilegedNoneModeWorks() throws {
        let probe = try Probe.start(["--mode", "none", "--share", share, "--as-uid", "1000"])
        defer { probe.finish() }
        let fields = try probe.readyFields()
        XCTAssertEqual(fields["uid"], "1000")
        let status = try procStatus(probe.pid)
        XCTAssertEqual(status["CapEff"].flatMap { UInt64($0, radix: 16) }, 0)
        XCTAssertEqual(status["Seccomp"], "2", "NO_NEW_PRIVS lets an unprivileged process load the filter")
    }

    func testUnprivilegedNamespaceModeUsesAUserNamespace() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share, "--as-uid", "1000"])
        defer { probe.finish() }
        let fields = try probe.readyFields()
        XCTAssertEqual(fields["root"], "/")
        XCTAssertEqual(fields["pid"], "1")
        XCTAssertEqual(fields["uid"], "1000", "the current uid is mapped onto itself")
        let serving = try XCTUnwrap(probe.servingPID())
        for ns in ["user", "mnt", "pid", "net"] {
            XCTAssertNotEqual(try nsLink(serving, ns), try nsLink(getpid(), ns), ns)
        }
        try assertSameFile("/proc/\(serving)/root", share)
        // Capabilities held in the user namespace are cut down like root's.
        try assertRestricted(serving, capabilities: Self.keptMask)
    }

    func testRootWithExplicitIDMapsHasThemWrittenFromOutside() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share,
                                     "--uid-map", ":0:100000:65536:", "--gid-map", ":0:100000:65536:"])
        defer { probe.finish() }
        let fields = try probe.readyFields()
        XCTAssertEqual(fields["uid"], "0", "host root is not in the map, so the daemon serves as the namespace's root")
        let serving = try XCTUnwrap(probe.servingPID())
        XCTAssertNotEqual(try nsLink(serving, "user"), try nsLink(getpid(), "user"))
        XCTAssertEqual(try idMap(serving, "uid_map"), ["0", "100000", "65536"])
        XCTAssertEqual(try idMap(serving, "gid_map"), ["0", "100000", "65536"])
        // Written with CAP_SETGID from outside, so per-request setgroups keeps working.
        XCTAssertEqual(try idMap(serving, "setgroups"), ["allow"])
        // Seen from the host, the serving process is the mapped root.
        let status = try procStatus(serving)
        XCTAssertEqual(status["Uid"]?.split(separator: "\t").first.map(String.init), "100000")
        XCTAssertEqual(status["Gid"]?.split(separator: "\t").first.map(String.init), "100000")
        XCTAssertEqual(status["Groups"] ?? "", "", "host root's groups are not in the map and are dropped")
        try assertRestricted(serving, capabilities: Self.keptMask)
    }

    /// libvirt's <idmap> in system mode hands root maps that do not cover root. Serving as
    /// the overflow id 65534, the daemon could switch to a guest caller's id but not back
    /// (EINVAL: 65534 is not mapped here), which ended the daemon under a running guest.
    func testRootWithMapsCanUndoARequestsIdentityChange() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share,
                                     "--uid-map", ":0:100000:1000:", "--gid-map", ":0:100000:1000:",
                                     "--switch-creds", "10"])
        defer { probe.finish() }
        XCTAssertEqual(try probe.readLine(), "switch 10: ok")
        XCTAssertEqual(try probe.readyFields()["uid"], "0")
    }

    func testRootMayGiveSeveralRanges() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share,
                                     "--uid-map", ":0:100000:1:", "--uid-map", ":1:200001:999:",
                                     "--gid-map", ":0:100000:1:", "--gid-map", ":1:200001:999:"])
        defer { probe.finish() }
        XCTAssertEqual(try probe.readyFields()["uid"], "0")
        let serving = try XCTUnwrap(probe.servingPID())
        XCTAssertEqual(try idMap(serving, "uid_map"), ["0", "100000", "1", "1", "200001", "999"])
        XCTAssertEqual(try idMap(serving, "gid_map"), ["0", "100000", "1", "1", "200001", "999"])
    }

    func testOverlappingRangesAreRefusedBeforeAnythingIsWritten() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share,
                                     "--uid-map", ":0:100000:10:", "--uid-map", ":5:300000:10:"])
        let (output, reason, status) = probe.waitForExit()
        XCTAssertEqual(reason, .exit)
        XCTAssertEqual(status, 3)
        XCTAssertTrue(output.contains("invalid id map :5:300000:10:: its namespace ids overlap those of :0:100000:10:"), output)
    }

    func testUnprivilegedMayMapItsOwnIDToRoot() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share, "--as-uid", "1000",
                                     "--uid-map", ":0:1000:1:", "--gid-map", ":0:1000:1:"])
        defer { probe.finish() }
        XCTAssertEqual(try probe.readyFields()["uid"], "0")
        let serving = try XCTUnwrap(probe.servingPID())
        XCTAssertEqual(try idMap(serving, "uid_map"), ["0", "1000", "1"])
        XCTAssertEqual(try idMap(serving, "setgroups"), ["deny"])
    }

    /// What libvirt 11 passes in session mode: the user's own id as root, then its
    /// subordinate range. Needs newuidmap/newgidmap and a subuid/subgid entry for uid 1000.
    func testUnprivilegedSubordinateRangesGoThroughNewuidmap() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: "/usr/bin/newuidmap"),
                          "needs newuidmap (Debian package uidmap)")
        try XCTSkipUnless(hasSubordinateIDs(uid: 1000), "needs a range for uid 1000 in /etc/subuid and /etc/subgid")
        let (first, count) = try XCTUnwrap(subordinateRange(uid: 1000))
        let range = ":1:\(first):\(min(count, 65536)):"
        let probe = try Probe.start(["--mode", "namespace", "--share", share, "--as-uid", "1000",
                                     "--uid-map", ":0:1000:1:", "--uid-map", range,
                                     "--gid-map", ":0:1000:1:", "--gid-map", range, "--switch-creds", "5"])
        defer { probe.finish() }
        XCTAssertEqual(try probe.readLine(), "switch 5: ok", "a guest user's id is usable")
        XCTAssertEqual(try probe.readyFields()["uid"], "0")
        let serving = try XCTUnwrap(probe.servingPID())
        XCTAssertEqual(try idMap(serving, "uid_map"), ["0", "1000", "1", "1", "\(first)", "\(min(count, 65536))"])
        XCTAssertEqual(try idMap(serving, "gid_map"), ["0", "1000", "1", "1", "\(first)", "\(min(count, 65536))"])
        try assertRestricted(serving, capabilities: Self.keptMask)
    }

    func testUnprivilegedCannotMapIDsItWasNotGiven() throws {
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: "/usr/bin/newuidmap"),
                          "needs newuidmap (Debian package uidmap)")
        // 3000000 is nobody's subordinate range here.
        let probe = try Probe.start(["--mode", "namespace", "--share", share, "--as-uid", "1000",
                                     "--uid-map", ":0:3000000:65536:"])
        let (output, reason, status) = probe.waitForExit()
        XCTAssertEqual(reason, .exit)
        XCTAssertEqual(status, 3)
        XCTAssertTrue(output.contains("/usr/bin/newuidmap") && output.contains("0 3000000 65536 failed")
                      && output.contains("/etc/subuid"), output)
    }

    func testUnprivilegedChrootIsAClearError() throws {
        let probe = try Probe.start(["--mode", "chroot", "--share", share, "--as-uid", "1000"])
        let (output, reason, status) = probe.waitForExit()
        XCTAssertEqual(reason, .exit)
        XCTAssertEqual(status, 3)
        XCTAssertTrue(output.contains("--sandbox=chroot needs root"), output)
    }

    // MARK: - file limit

    func testDefaultFileLimitIsRaisedAsFarAsAllowed() throws {
        let probe = try Probe.start(["--mode", "none", "--share", share])
        defer { probe.finish() }
        let reported = try XCTUnwrap(try probe.readyFields()["nofile"].flatMap { UInt64($0) })
        let ours = try Sys.getrlimit(Int32(RLIMIT_NOFILE.rawValue))
        let nrOpen = UInt64(try String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        let wanted = min(nrOpen, 1_000_000)
        // Without CAP_SYS_RESOURCE the hard limit is as far as it goes.
        let expected = try hasCapability(getpid(), 24) ? wanted : max(min(wanted, UInt64(ours.rlim_max)), UInt64(ours.rlim_cur))
        XCTAssertEqual(reported, expected)
        XCTAssertEqual(try softOpenFileLimit(probe.pid), reported)
    }

    func testExplicitFileLimitIsApplied() throws {
        let probe = try Probe.start(["--mode", "none", "--share", share, "--nofile", "4096"])
        defer { probe.finish() }
        XCTAssertEqual(try probe.readyFields()["nofile"], "4096")
        XCTAssertEqual(try softOpenFileLimit(probe.pid), 4096)
    }

    func testFileLimitZeroLeavesTheLimitAsItIs() throws {
        let ours = try Sys.getrlimit(Int32(RLIMIT_NOFILE.rawValue))
        let probe = try Probe.start(["--mode", "none", "--share", share, "--nofile", "0"])
        defer { probe.finish() }
        XCTAssertEqual(try probe.readyFields()["nofile"], "\(ours.rlim_cur)")
        XCTAssertEqual(try softOpenFileLimit(probe.pid), UInt64(ours.rlim_cur))
    }

    func testExplicitFileLimitAboveTheHardLimitIsAnError() throws {
        try XCTSkipIf(try hasCapability(getpid(), 24), "with CAP_SYS_RESOURCE the hard limit can be raised")
        let ours = try Sys.getrlimit(Int32(RLIMIT_NOFILE.rawValue))
        let probe = try Probe.start(["--mode", "none", "--share", share, "--nofile", "\(ours.rlim_max + 1)"])
        let (output, reason, status) = probe.waitForExit()
        XCTAssertEqual(reason, .exit)
        XCTAssertEqual(status, 3)
        XCTAssertTrue(output.contains("hard limit \(ours.rlim_max)"), output)
    }

    // MARK: - signals

    func testSIGTERMToTheNamespaceParentStopsTheServingProcess() throws {
        let probe = try Probe.start(["--mode", "namespace", "--share", share])
        _ = try probe.readyFields()
        let serving = try XCTUnwrap(probe.servingPID())
        kill(probe.pid, SIGTERM)
        let (_, reason, status) = probe.waitForExit(closeInput: false)
        XCTAssertEqual(reason, .exit)
        XCTAssertEqual(status, 128 + SIGTERM, "the serving process, PID 1 of its namespace, ended on SIGTERM")
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/proc/\(serving)/status"))
    }

    // MARK: - helpers

    func assertRestricted(_ pid: pid_t, capabilities mask: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        let status = try procStatus(pid)
        XCTAssertEqual(status["Seccomp"], "2", "filter mode", file: file, line: line)
        XCTAssertEqual(status["NoNewPrivs"], "1", file: file, line: line)
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            XCTAssertEqual(status[set].flatMap { UInt64($0, radix: 16) }, mask,
                           "\(set) \(status[set] ?? "?")", file: file, line: line)
        }
        XCTAssertEqual(status["CapInh"].flatMap { UInt64($0, radix: 16) }, 0, file: file, line: line)
        XCTAssertEqual(status["CapAmb"].flatMap { UInt64($0, radix: 16) }, 0, file: file, line: line)
    }

    func assertSameFile(_ a: String, _ b: String, file: StaticString = #filePath, line: UInt = #line) throws {
        var sa = stat(), sb = stat()
        XCTAssertEqual(stat(a, &sa), 0, a, file: file, line: line)
        XCTAssertEqual(stat(b, &sb), 0, b, file: file, line: line)
        XCTAssertEqual(sa.st_dev, sb.st_dev, "\(a) vs \(b)", file: file, line: line)
        XCTAssertEqual(sa.st_ino, sb.st_ino, "\(a) vs \(b)", file: file, line: line)
    }
}

func nsLink(_ pid: pid_t, _ ns: String) throws -> String {
    try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(ns)")
}

func idMap(_ pid: pid_t, _ file: String) throws -> [String] {
    try String(contentsOfFile: "/proc/\(pid)/\(file)", encoding: .utf8).split(whereSeparator: \.isWhitespace).map(String.init)
}

/// The mount points a process sees, relative to its own root.
func mountPoints(_ pid: pid_t) throws -> [String] {
    let text = try String(contentsOfFile: "/proc/\(pid)/mountinfo", encoding: .utf8)
    return text.split(separator: "\n").compactMap { line in
        let fields = line.split(separator: " ")
        return fields.count > 4 ? String(fields[4]) : nil
    }
}

func procStatus(_ pid: pid_t) throws -> [String: String] {
    let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    var fields: [String: String] = [:]
    for line in text.split(separator: "\n") {
        guard let colon = line.firstIndex(of: ":") else { continue }
        fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    return fields
}

func hasCapability(_ pid: pid_t, _ cap: UInt64) throws -> Bool {
    let eff = try procStatus(pid)["CapEff"].flatMap { UInt64($0, radix: 16) } ?? 0
    return eff & (1 << cap) != 0
}

func softOpenFileLimit(_ pid: pid_t) throws -> UInt64? {
    let text = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Max open files") }) else { return nil }
    let words = line.dropFirst("Max open files".count).split(separator: " ")
    return words.first.flatMap { UInt64($0) }
}

/// A running sandbox-probe with pipes on stdin and stdout.
final class Probe {
    let process: Process
    let input = Pipe()
    let output = Pipe()
    var buffer = Data()
    var pid: pid_t { process.processIdentifier }

    static var executable: URL {
        // The probe is built next to the test bundle.
        let me = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                     ?? CommandLine.arguments[0])
        return me.deletingLastPathComponent().appendingPathComponent("sandbox-probe")
    }

    private init() { process = Process() }

    static func start(_ arguments: [String]) throws -> Probe {
        let probe = Probe()
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw XCTSkip("sandbox-probe not built at \(executable.path); run swift build first")
        }
        probe.process.executableURL = executable
        probe.process.arguments = arguments
        probe.process.standardInput = probe.input
        probe.process.standardOutput = probe.output
        try probe.process.run()
        return probe
    }

    /// The next line of output; throws at end of output.
    func readLine() throws -> String {
        while true {
            if let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: buffer[buffer.startIndex..<nl], as: UTF8.self)
                buffer = Data(buffer[(nl + 1)...])
                return line
            }
            let more = output.fileHandleForReading.availableData
            if more.isEmpty { throw ProbeError.endOfOutput(String(decoding: buffer, as: UTF8.self)) }
            buffer.append(more)
        }
    }

    /// The key=value fields of the "ready" line.
    func readyFields() throws -> [String: String] {
        let line = try readLine()
        guard line.hasPrefix("ready ") else { throw ProbeError.notReady(line) }
        var fields: [String: String] = [:]
        for word in line.split(separator: " ").dropFirst() {
            let parts = word.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = String(parts[1]) }
        }
        return fields
    }

    /// In namespace mode, the forked child that serves; nil when there is none.
    func servingPID() -> pid_t? {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for entry in entries {
            guard let candidate = pid_t(entry), let status = try? procStatus(candidate) else { continue }
            if status["PPid"] == "\(pid)" { return candidate }
        }
        return nil
    }

    /// Closes stdin (the probe's cue to leave) and collects the rest of its output and its end.
    func waitForExit(closeInput: Bool = true) -> (String, Process.TerminationReason, Int32) {
        if closeInput { try? input.fileHandleForWriting.close() }
        let rest = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let all = String(decoding: buffer + rest, as: UTF8.self)
        return (all, process.terminationReason, process.terminationStatus)
    }

    func finish() {
        _ = waitForExit()
    }
}

enum ProbeError: Error {
    case endOfOutput(String)
    case notReady(String)
}

/// The first subordinate range of `uid`'s user in /etc/subuid, if it has one in both files.
func subordinateRange(uid: uid_t) -> (UInt32, UInt32)? {
    guard let entry = getpwuid(uid), let name = String(validatingCString: entry.pointee.pw_name) else { return nil }
    func first(_ file: String) -> (UInt32, UInt32)? {
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ":")
            if fields.count == 3, fields[0] == name, let a = UInt32(fields[1]), let n = UInt32(fields[2]) { return (a, n) }
        }
        return nil
    }
    guard let uidRange = first("/etc/subuid"), let gidRange = first("/etc/subgid"), uidRange == gidRange else { return nil }
    return uidRange
}

func hasSubordinateIDs(uid: uid_t) -> Bool { subordinateRange(uid: uid) != nil }
