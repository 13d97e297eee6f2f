import Foundation
import XCTest
import Posix
import VhostUserFrontend

/// The real daemon's sandbox, inspected from outside through /proc once a frontend has
/// connected and finished the handshake (so every thread exists).
final class DaemonSandboxTests: XCTestCase {
    /// Capability numbers from linux/capability.h.
    enum Cap {
        static let chown = 0, dacOverride = 1, dacReadSearch = 2, fowner = 3, fsetid = 4
        static let setgid = 6, setuid = 7, mknod = 27, setfcap = 31
    }

    static func mask(_ caps: [Int]) -> UInt64 { caps.reduce(0) { $0 | (1 << UInt64($1)) } }

    /// What a root daemon keeps. DAC_READ_SEARCH is kept in every inode mode: the
    /// descriptor-budget fallback reopens file handles, which needs it.
    static let keptMask = mask([Cap.chown, Cap.dacOverride, Cap.dacReadSearch, Cap.fowner, Cap.fsetid,
                                Cap.setgid, Cap.setuid, Cap.mknod, Cap.setfcap])

    /// A daemon serving a connected, initialised frontend, and the pid that serves.
    struct Running {
        let scratch: Scratch
        let daemon: SpawnedDaemon
        let frontend: VhostUserFrontend
        let fuse: FuseClient
        let servingPID: pid_t
    }

    private func start(_ extra: [String], namespaceMode: Bool) throws -> Running {
        let scratch = try Scratch(files: ["f": "inside"])
        let daemon = try SpawnedDaemon(["--socket-path=\(scratch.socketPath)", "-o", "source=\(scratch.shared.path)"] + extra,
                                       in: scratch.directory)
        guard daemon.waitForSocket(scratch.socketPath) else {
            throw XCTSkip("daemon did not start: \(daemon.standardError)")
        }
        let (frontend, fuse) = try connectAndInitialize(scratch.socketPath)
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 6)
        guard let serving = daemon.servingPID(namespaceMode: namespaceMode) else {
            throw NSError(domain: "no serving child of \(daemon.pid)", code: 1)
        }
        return Running(scratch: scratch, daemon: daemon, frontend: frontend, fuse: fuse, servingPID: serving)
    }

    /// The fields of /proc/PID/status, by name.
    static func status(_ pid: pid_t) throws -> [String: String] {
        let text = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    static func namespace(_ pid: String, _ kind: String) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(kind)")
    }

    static func identity(_ path: String) -> (UInt64, UInt64)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    private func assertCapabilities(_ pid: pid_t, _ expected: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        let fields = try Self.status(pid)
        for name in ["CapEff", "CapPrm", "CapBnd"] {
            XCTAssertEqual(fields[name].flatMap { UInt64($0, radix: 16) }, expected,
                           "\(name) is \(fields[name] ?? "missing"), want \(String(expected, radix: 16))", file: file, line: line)
        }
        XCTAssertEqual(fields["CapInh"].flatMap { UInt64($0, radix: 16) }, 0, file: file, line: line)
        XCTAssertEqual(fields["CapAmb"].flatMap { UInt64($0, radix: 16) }, 0, file: file, line: line)
    }

    private func assertRootIsShare(_ run: Running, file: StaticString = #filePath, line: UInt = #line) {
        let root = Self.identity("/proc/\(run.servingPID)/root/.")
        let share = Self.identity(run.scratch.shared.path)
        guard let root, let share else { return XCTFail("cannot stat the root or the share", file: file, line: line) }
        XCTAssertTrue(root == share, "root \(root) is not the share \(share)", file: file, line: line)
    }

    func testNamespaceModeIsolatesTheServingChild() throws {
        let run = try start(["--sandbox=namespace"], namespaceMode: true)
        XCTAssertNotEqual(run.servingPID, run.daemon.pid, "namespace mode serves from a forked child")
        let fields = try Self.status(run.servingPID)
        XCTAssertEqual(fields["Seccomp"], "2")
        XCTAssertEqual(fields["NoNewPrivs"], "1")
        try assertCapabilities(run.servingPID, Self.keptMask)
        for kind in ["mnt", "pid", "net"] {
            let theirs = Self.namespace("\(run.servingPID)", kind)
            XCTAssertNotNil(theirs)
            XCTAssertNotEqual(theirs, Self.namespace("self", kind), "\(kind) namespace is shared with the host")
        }
        assertRootIsShare(run)
        // The waiting parent holds nothing.
        let parent = try Self.status(run.daemon.pid)
        XCTAssertEqual(parent["CapEff"].flatMap { UInt64($0, radix: 16) }, 0)
    }

    func testNamespaceIsTheDefaultAndDashOSpellingSelectsChroot() throws {
        let byDefault = try start([], namespaceMode: true)
        XCTAssertNotEqual(Self.namespace("\(byDefault.servingPID)", "mnt"), Self.namespace("self", "mnt"))
        let chroot = try start(["-o", "sandbox=chroot"], namespaceMode: false)
        XCTAssertEqual(Self.namespace("\(chroot.servingPID)", "mnt"), Self.namespace("self", "mnt"))
        assertRootIsShare(chroot)
    }

    func testChrootModeRootsTheDaemonInTheShare() throws {
        let run = try start(["--sandbox=chroot"], namespaceMode: false)
        let fields = try Self.status(run.servingPID)
        XCTAssertEqual(fields["Seccomp"], "2")
        try assertCapabilities(run.servingPID, Self.keptMask)
        assertRootIsShare(run)
        for kind in ["mnt", "pid", "net"] {
            XCTAssertEqual(Self.namespace("\(run.servingPID)", kind), Self.namespace("self", kind))
        }
    }

    func testNoSandboxKeepsOurNamespacesButStillDropsCapabilitiesAndFilters() throws {
        let run = try start(["--sandbox=none"], namespaceMode: false)
        let fields = try Self.status(run.servingPID)
        XCTAssertEqual(fields["Seccomp"], "2")
        try assertCapabilities(run.servingPID, Self.keptMask)
        for kind in ["mnt", "pid", "net"] {
            XCTAssertEqual(Self.namespace("\(run.servingPID)", kind), Self.namespace("self", kind))
        }
        XCTAssertEqual(Self.identity("/proc/\(run.servingPID)/root/.")?.1, Self.identity("/")?.1)
    }

    func testSeccompNoneLoadsNoFilter() throws {
        let run = try start(["--sandbox=chroot", "--seccomp=none"], namespaceMode: false)
        XCTAssertEqual(try Self.status(run.servingPID)["Seccomp"], "0")
    }

    func testModcapsDropIsReflected() throws {
        let run = try start(["--modcaps=-chown"], namespaceMode: true)
        try assertCapabilities(run.servingPID, Self.keptMask & ~Self.mask([Cap.chown]))
    }

    func testModcapsAddIsReflected() throws {
        let run = try start(["--sandbox=chroot", "--modcaps=+sys_admin:-mknod"], namespaceMode: false)
        try assertCapabilities(run.servingPID, (Self.keptMask | Self.mask([21])) & ~Self.mask([Cap.mknod]))
    }

    func testFileHandlesKeepDacReadSearch() throws {
        let run = try start(["--sandbox=chroot", "--inode-file-handles=prefer"], namespaceMode: false)
        try assertCapabilities(run.servingPID, Self.keptMask)
        XCTAssertNotEqual(Self.keptMask & Self.mask([Cap.dacReadSearch]), 0)
    }

    func testExpectedMaskMatchesTheDocumentedValue() {
        // docs/security.md quotes this mask for operators to grep for.
        XCTAssertEqual(String(Self.keptMask, radix: 16), "880000df")
    }
}
