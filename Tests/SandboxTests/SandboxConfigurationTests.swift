import Foundation
import Posix
@testable import Sandbox
import XCTest

/// The pure parts: option parsing, the kept-capability set, the seccomp table.
final class SandboxConfigurationTests: XCTestCase {
    // CHOWN DAC_OVERRIDE FOWNER FSETID SETGID SETUID MKNOD SETFCAP
    static let keptMask: UInt64 = 0x8800_00DB

    func testModcapsParsesAddsAndDrops() throws {
        let edits = try parseCapabilityEdits("+sys_admin:-chown")
        XCTAssertEqual(edits, [CapabilityEdit(change: .add, name: "sys_admin", capability: 21),
                               CapabilityEdit(change: .drop, name: "chown", capability: 0)])
    }

    func testModcapsAcceptsCapPrefixAndUpperCase() throws {
        XCTAssertEqual(try parseCapabilityEdits("+CAP_SYS_ADMIN").map(\.capability), [21])
    }

    func testEmptyModcapsMeansNoEdits() throws {
        XCTAssertEqual(try parseCapabilityEdits(""), [])
    }

    func testUnknownCapabilityIsAnErrorNamingIt() {
        XCTAssertThrowsError(try parseCapabilityEdits("+sys_admin:-frobnicate")) { error in
            XCTAssertEqual(error as? SandboxError, .unknownCapability("frobnicate"))
            XCTAssertTrue("\(error)".contains("\"frobnicate\""), "\(error)")
        }
    }

    func testCapabilityEditLooksUpTheNumberOfANormalisedName() {
        XCTAssertEqual(CapabilityEdit(change: .drop, name: "mknod"),
                       CapabilityEdit(change: .drop, name: "mknod", capability: 27))
        XCTAssertNil(CapabilityEdit(change: .add, name: "frobnicate"))
    }

    func testModcapsItemWithoutSignIsRejected() {
        XCTAssertThrowsError(try parseCapabilityEdits("sys_admin")) { error in
            XCTAssertEqual(error as? SandboxError, .invalidCapabilityEdit("sys_admin"))
        }
        XCTAssertThrowsError(try parseCapabilityEdits("+"))
    }

    func testKeptCapabilitiesAreTheDocumentedEight() {
        let c = SandboxConfiguration(sharedDirectory: "/")
        XCTAssertEqual(Sandbox.capabilityMask(Sandbox.capabilitiesToKeep(c)), Self.keptMask)
    }

    func testFileHandlesKeepDacReadSearch() {
        let c = SandboxConfiguration(sharedDirectory: "/", keepDacReadSearch: true)
        XCTAssertEqual(Sandbox.capabilityMask(Sandbox.capabilitiesToKeep(c)), Self.keptMask | 1 << 2)
    }

    func testModcapsEditsApplyToTheKeptSet() throws {
        let c = SandboxConfiguration(sharedDirectory: "/", capabilityEdits: try parseCapabilityEdits("+sys_admin:-mknod"))
        XCTAssertEqual(Sandbox.capabilityMask(Sandbox.capabilitiesToKeep(c)), (Self.keptMask | 1 << 21) & ~(1 << 27))
    }

    func testIDMapParses() throws {
        XCTAssertEqual(try parseIDMap(":0:1000:1:"), IDMap(inside: 0, outside: 1000, count: 1))
        XCTAssertEqual(try parseIDMap(":0:100000:65536:").mapFileLine, "0 100000 65536\n")
    }

    func testMalformedIDMapsAreRejected() {
        for bad in ["0:1000:1", ":0:1000:", ":a:1:1:", ":0:1:0:", ":1:2:3:4:", "::", "", ":-1:0:1:",
                    ":4294967295:0:1:", ":0:4294967290:10:", ":99999999999:0:1:"] {
            XCTAssertThrowsError(try parseIDMap(bad), bad) { error in
                guard case .invalidIDMap(let text, _)? = error as? SandboxError else {
                    return XCTFail("\(bad): \(error)")
                }
                XCTAssertEqual(text, bad)
            }
        }
    }

    func testDecimalValueRefusesWhatIsNotAWholeNumberThatFits() {
        XCTAssertEqual(decimalValue(Array("18446744073709551615".utf8)), UInt64.max)
        XCTAssertEqual(decimalValue(Array("0042".utf8)), 42)
        XCTAssertNil(decimalValue(Array("18446744073709551616".utf8)))
        XCTAssertNil(decimalValue(Array("".utf8)))
        XCTAssertNil(decimalValue(Array("12\n".utf8)))
        XCTAssertNil(decimalValue(Array("-1".utf8)))
    }

    func testErrorsNameTheFailingStep() {
        XCTAssertEqual(SandboxError.pivotRoot("/srv/share", .permissionDenied).description,
                       "pivot_root into /srv/share: Operation not permitted")
        XCTAssertTrue(SandboxError.chrootNeedsRoot.description.contains("--sandbox=namespace"))
    }

    func testSeccompTableHasOneEntryWithAReasonPerSyscall() {
        let all = Sandbox.seccompAllowList + Sandbox.seccompSyslogRules
        XCTAssertEqual(Set(all.map(\.name)).count, all.count, "duplicate entries")
        for rule in all { XCTAssertFalse(rule.reason.isEmpty, rule.name) }
    }

    func testEveryAllowedNameIsKnownToLibseccomp() {
        // A typo in the table would silently allow nothing; newer calls than this
        // libseccomp knows are the only acceptable misses.
        let newerThanLibseccomp: Set<String> = []
        for rule in Sandbox.seccompRules(syslog: true) where !newerThanLibseccomp.contains(rule.name) {
            XCTAssertNotNil(Sandbox.syscallNumber(rule.name), rule.name)
        }
        XCTAssertNil(Sandbox.syscallNumber("no_such_call"))
    }

    func testSyslogCallsAreAllowedOnlyWithSyslog() {
        let without = Set(Sandbox.seccompRules(syslog: false).map(\.name))
        let with = Set(Sandbox.seccompRules(syslog: true).map(\.name))
        for name in ["sendto", "connect", "socket"] {
            XCTAssertFalse(without.contains(name), name)
            XCTAssertTrue(with.contains(name), name)
        }
    }

    func testLegacyCallsAreOnlyInTheX86Table() {
        let arm = Set(Sandbox.seccompRules(syslog: false, architecture: .aarch64).map(\.name))
        let x86 = Set(Sandbox.seccompRules(syslog: false, architecture: .x86_64).map(\.name))
        for name in ["open", "renameat", "poll", "getdents"] {
            XCTAssertFalse(arm.contains(name), name)
            XCTAssertTrue(x86.contains(name), name)
        }
        XCTAssertTrue(arm.isSuperset(of: ["openat", "renameat2", "ppoll", "getdents64"]))
    }

    func testNoEpollCallIsAllowedSinceNothingWaitsWithEpoll() {
        // Every wait is poll(2) on at most three descriptors; epoll is attack surface only.
        let allowed = Set(Sandbox.seccompRules(syslog: true).map(\.name))
        for name in ["epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2"] {
            XCTAssertFalse(allowed.contains(name), name)
        }
    }

    func testDangerousCallsAreNotAllowed() {
        // The probe's forbidden call, and what an attacker would want first.
        let allowed = Set(Sandbox.seccompRules(syslog: true).map(\.name))
        for name in ["getppid", "execve", "execveat", "ptrace", "mount", "umount2", "pivot_root", "chroot",
                     "setns", "kexec_load", "init_module", "bpf", "process_vm_writev", "fork", "vfork"] {
            XCTAssertFalse(allowed.contains(name), name)
        }
    }

    func testShareMustBeAnAbsoluteExistingDirectory() throws {
        let logger = Logger.discarding
        XCTAssertThrowsError(try Sandbox.enter(SandboxConfiguration(mode: .none, sharedDirectory: "relative"), logger: logger)) {
            XCTAssertEqual($0 as? SandboxError, .sharedDirectoryNotAbsolute("relative"))
        }
        XCTAssertThrowsError(try Sandbox.enter(SandboxConfiguration(mode: .none, sharedDirectory: "/no/such/dir"), logger: logger)) {
            XCTAssertEqual($0 as? SandboxError, .sharedDirectory("/no/such/dir", .noEntry))
        }
        XCTAssertThrowsError(try Sandbox.enter(SandboxConfiguration(mode: .none, sharedDirectory: "/proc/self/status"), logger: logger)) {
            XCTAssertEqual($0 as? SandboxError, .sharedDirectoryNotADirectory("/proc/self/status"))
        }
    }

    func testModeNoneChangesNothingAndKeepsProcVisible() throws {
        let share = NSTemporaryDirectory()
        let result = try Sandbox.enter(SandboxConfiguration(mode: .none, sharedDirectory: share), logger: .discarding)
        XCTAssertEqual(result.root, share)
        let fd = try XCTUnwrap(result.procSelfFD)
        defer { Sys.close(fd) }
        // The fd really is this process's fd directory: our own fd shows up in it.
        XCTAssertEqual(faccessat(fd, "\(fd)", F_OK, AT_SYMLINK_NOFOLLOW), 0)
    }

    func testSystemFileMaxIsReadFromProc() throws {
        let text = try String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8)
        XCTAssertEqual(Sandbox.readSystemFileMax(), UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)))
    }
}
