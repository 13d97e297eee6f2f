import Foundation
import Options
import Posix
@testable import Sandbox
import XCTest

/// The pure parts: option parsing, the kept-capability set, the seccomp table.
final class SandboxConfigurationTests: XCTestCase {
    // CHOWN DAC_OVERRIDE FOWNER FSETID SETGID SETUID MKNOD SETFCAP
    static let keptMask: UInt64 = 0x8800_00DB

    func testResolveLooksUpCapabilityNumbers() throws {
        let edits = try Sandboxing.resolve([CapabilityChange(add: true, name: "sys_admin"),
                                            CapabilityChange(add: false, name: "mknod")])
        XCTAssertEqual(edits.map(\.capability), [21, 27])
    }

    func testUnknownCapabilityIsAnErrorNamingIt() {
        XCTAssertThrowsError(try Sandboxing.resolve([CapabilityChange(add: true, name: "sys_admin"),
                                                     CapabilityChange(add: false, name: "frobnicate")])) { error in
            XCTAssertEqual(error as? SandboxError, .unknownCapability("frobnicate"))
            XCTAssertTrue("\(error)".contains("\"frobnicate\""), "\(error)")
        }
    }

    func testKeptCapabilitiesAreTheDocumentedEight() {
        let c = SandboxConfiguration(sharedDirectory: "/")
        XCTAssertEqual(Sandboxing.capabilityMask(Sandboxing.capabilitiesToKeep(c)), Self.keptMask)
    }

    func testFileHandlesKeepDacReadSearch() {
        let c = SandboxConfiguration(sharedDirectory: "/", keepDacReadSearch: true)
        XCTAssertEqual(Sandboxing.capabilityMask(Sandboxing.capabilitiesToKeep(c)), Self.keptMask | 1 << 2)
    }

    func testModcapsEditsApplyToTheKeptSet() throws {
        let c = SandboxConfiguration(sharedDirectory: "/", capabilityEdits: CapabilityChange.parseList("+sys_admin:-mknod") ?? [])
        XCTAssertEqual(Sandboxing.capabilityMask(Sandboxing.capabilitiesToKeep(c)), (Self.keptMask | 1 << 21) & ~(1 << 27))
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
        let all = Sandboxing.seccompAllowList + Sandboxing.seccompSyslogRules
        XCTAssertEqual(Set(all.map(\.name)).count, all.count, "duplicate entries")
        for rule in all { XCTAssertFalse(rule.reason.isEmpty, rule.name) }
    }

    func testEveryAllowedNameIsKnownToLibseccomp() {
        // A typo in the table would silently allow nothing; newer calls than this
        // libseccomp knows are the only acceptable misses.
        let newerThanLibseccomp: Set<String> = []
        for rule in Sandboxing.seccompRules(syslog: true) where !newerThanLibseccomp.contains(rule.name) {
            XCTAssertNotNil(Sandboxing.syscallNumber(rule.name), rule.name)
        }
        XCTAssertNil(Sandboxing.syscallNumber("no_such_call"))
    }

    func testSyslogCallsAreAllowedOnlyWithSyslog() {
        let without = Set(Sandboxing.seccompRules(syslog: false).map(\.name))
        let with = Set(Sandboxing.seccompRules(syslog: true).map(\.name))
        for name in ["sendto", "connect", "socket"] {
            XCTAssertFalse(without.contains(name), name)
            XCTAssertTrue(with.contains(name), name)
        }
    }

    func testLegacyCallsAreOnlyInTheX86Table() {
        let arm = Set(Sandboxing.seccompRules(syslog: false, architecture: .aarch64).map(\.name))
        let x86 = Set(Sandboxing.seccompRules(syslog: false, architecture: .x86_64).map(\.name))
        for name in ["open", "renameat", "poll", "getdents"] {
            XCTAssertFalse(arm.contains(name), name)
            XCTAssertTrue(x86.contains(name), name)
        }
        XCTAssertTrue(arm.isSuperset(of: ["openat", "renameat2", "ppoll", "getdents64"]))
    }

    func testNoEpollCallIsAllowedSinceNothingWaitsWithEpoll() {
        // Every wait is poll(2) on at most three descriptors; epoll is attack surface only.
        let allowed = Set(Sandboxing.seccompRules(syslog: true).map(\.name))
        for name in ["epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2"] {
            XCTAssertFalse(allowed.contains(name), name)
        }
    }

    func testDangerousCallsAreNotAllowed() {
        // The probe's forbidden call, and what an attacker would want first.
        let allowed = Set(Sandboxing.seccompRules(syslog: true).map(\.name))
        for name in ["getppid", "execve", "execveat", "ptrace", "mount", "umount2", "pivot_root", "chroot",
                     "setns", "kexec_load", "init_module", "bpf", "process_vm_writev", "fork", "vfork"] {
            XCTAssertFalse(allowed.contains(name), name)
        }
    }

    func testShareMustBeAnAbsoluteExistingDirectory() throws {
        let logger = Logger.discarding
        XCTAssertThrowsError(try Sandboxing.enter(SandboxConfiguration(mode: .none, sharedDirectory: "relative"), logger: logger)) {
            XCTAssertEqual($0 as? SandboxError, .sharedDirectoryNotAbsolute("relative"))
        }
        XCTAssertThrowsError(try Sandboxing.enter(SandboxConfiguration(mode: .none, sharedDirectory: "/no/such/dir"), logger: logger)) {
            XCTAssertEqual($0 as? SandboxError, .sharedDirectory("/no/such/dir", .noEntry))
        }
        XCTAssertThrowsError(try Sandboxing.enter(SandboxConfiguration(mode: .none, sharedDirectory: "/proc/self/status"), logger: logger)) {
            XCTAssertEqual($0 as? SandboxError, .sharedDirectoryNotADirectory("/proc/self/status"))
        }
    }

    func testModeNoneChangesNothingAndKeepsProcVisible() throws {
        let share = NSTemporaryDirectory()
        let result = try Sandboxing.enter(SandboxConfiguration(mode: .none, sharedDirectory: share), logger: .discarding)
        XCTAssertEqual(result.root, share)
        let fd = try XCTUnwrap(result.procSelfFD)
        defer { Sys.close(fd) }
        // The fd really is this process's fd directory: our own fd shows up in it.
        XCTAssertEqual(faccessat(fd, "\(fd)", F_OK, AT_SYMLINK_NOFOLLOW), 0)
    }

    func testSystemFileMaxIsReadFromProc() throws {
        let text = try String(contentsOfFile: "/proc/sys/fs/nr_open", encoding: .utf8)
        XCTAssertEqual(Sandboxing.readSystemFileMax(), UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines)))
    }
}

final class IDMapRangeTests: XCTestCase {
    let own = IDMap(inside: 0, outside: 1500, count: 1)
    let subordinate = IDMap(inside: 1, outside: 100000, count: 65536)

    func testLibvirtSessionRangesAreAcceptedAndWrittenAsTwoLines() throws {
        XCTAssertNoThrow(try checkIDMaps([own, subordinate], kind: "uid"))
        XCTAssertEqual(idMapFileText([own, subordinate]), "0 1500 1\n1 100000 65536\n")
    }

    func testOverlappingRangesAreRefusedNamingBoth() {
        let cases: [(IDMap, String)] = [
            (IDMap(inside: 5, outside: 500000, count: 1), "its namespace ids overlap those of :1:100000:65536:"),
            (IDMap(inside: 70000, outside: 165535, count: 1), "its host ids overlap those of :1:100000:65536:"),
        ]
        for (extra, why) in cases {
            XCTAssertThrowsError(try checkIDMaps([own, subordinate, extra], kind: "uid")) { error in
                XCTAssertEqual(error as? SandboxError, .invalidIDMap(extra.description, why))
            }
        }
    }

    func testMoreRangesThanTheKernelTakesAreRefused() {
        let many = (0..<UInt32(maxIDMapRanges + 1)).map { IDMap(inside: $0, outside: 200000 + $0, count: 1) }
        XCTAssertNoThrow(try checkIDMaps(Array(many.dropLast()), kind: "gid"))
        XCTAssertThrowsError(try checkIDMaps(many, kind: "gid")) { error in
            XCTAssertEqual(error as? SandboxError, .invalidIDMap("--gid-map", "341 ranges given; the kernel takes at most 340"))
        }
    }

    func testOnlyASingleRangeOfOnesOwnIDMayBeWrittenWithoutHelp() {
        XCTAssertTrue(isOwnIDOnly([own], own: 1500))
        XCTAssertFalse(isOwnIDOnly([own], own: 1000))
        XCTAssertFalse(isOwnIDOnly([own, subordinate], own: 1500))
        XCTAssertFalse(isOwnIDOnly([IDMap(inside: 0, outside: 1500, count: 2)], own: 1500))
    }

    func testHostIDsAreFoundInTheirRange() {
        XCTAssertEqual(insideID(of: 1500, in: [own, subordinate]), 0)
        XCTAssertEqual(insideID(of: 100000, in: [own, subordinate]), 1)
        XCTAssertEqual(insideID(of: 165535, in: [own, subordinate]), 65536)
        XCTAssertNil(insideID(of: 0, in: [own, subordinate]), "root is not mapped: the daemon must take another identity")
        XCTAssertNil(insideID(of: 165536, in: [own, subordinate]))
    }
}
