import XCTest
@testable import DaemonConfig
import IDTranslation
import Options
import XattrMap

/// The smallest valid command line; each case adds to it.
let base = ["--socket-path=/run/vfs.sock", "--shared-dir=/srv"]

func baseOptions() -> DaemonOptions {
    var o = DaemonOptions()
    o.socketPath = "/run/vfs.sock"
    o.sharedDir = "/srv"
    return o
}

func options(_ args: [String], file: StaticString = #filePath, line: UInt = #line) -> DaemonOptions? {
    switch parseCommandLine(args) {
    case .success(.run(let o)):
        return o
    case .success(let other):
        XCTFail("\(args): expected run, got \(other)", file: file, line: line)
    case .failure(let e):
        XCTFail("\(args): unexpected error: \(e)", file: file, line: line)
    }
    return nil
}

final class LongOptionTests: XCTestCase {
    /// (option, value, what it changes). Each runs as `--opt=VALUE` and as `--opt VALUE`.
    let valued: [(String, String, (inout DaemonOptions) -> Void)] = [
        ("--shared-dir", "/export", { $0.sharedDir = "/export" }),
        ("--tag", "myfs", { $0.tag = "myfs" }),
        ("--socket-path", "/tmp/other.sock", { $0.socketPath = "/tmp/other.sock" }),
        ("--socket-group", "kvm", { $0.socketGroup = "kvm" }),
        ("--thread-pool-size", "64", { $0.threadPoolSize = 64 }),
        ("--num-request-queues", "4", { $0.numRequestQueues = 4 }),
        ("--xattrmap", ":map::user.virtiofs.:", { $0.xattrMap = try? XattrMap(rules: ":map::user.virtiofs.:") }),
        ("--sandbox", "chroot", { $0.sandbox = .chroot }),
        ("--sandbox", "none", { $0.sandbox = .none }),
        ("--sandbox", "namespace", { $0.sandbox = .namespace }),
        ("--seccomp", "none", { $0.seccomp = .none }),
        ("--seccomp", "kill", { $0.seccomp = .kill }),
        ("--seccomp", "log", { $0.seccomp = .log }),
        ("--seccomp", "trap", { $0.seccomp = .trap }),
        ("--cache", "auto", { $0.cache = .auto }),
        ("--cache", "always", { $0.cache = .always }),
        ("--cache", "metadata", { $0.cache = .metadata }),
        ("--cache", "never", { $0.cache = .never }),
        ("--cache", "none", { $0.cache = .never }),
        ("--modcaps", "+sys_admin:-CHOWN:+cap_fowner", {
            $0.modcaps = [CapabilityChange(add: true, name: "sys_admin"),
                          CapabilityChange(add: false, name: "chown"),
                          CapabilityChange(add: true, name: "fowner")]
        }),
        ("--log-level", "error", { $0.logLevel = .error }),
        ("--log-level", "warn", { $0.logLevel = .warning }),
        ("--log-level", "info", { $0.logLevel = .info }),
        ("--log-level", "debug", { $0.logLevel = .debug }),
        ("--log-level", "trace", { $0.logLevel = .trace }),
        ("--log-level", "off", { $0.logLevel = .off }),
        ("--rlimit-nofile", "20000", { $0.rlimitNofile = 20000 }),
        ("--rlimit-nofile", "0", { $0.rlimitNofile = 0 }),
        ("--uid-map", ":0:100000:65536:", { $0.uidMap = [IDMap(inside: 0, outside: 100000, count: 65536)] }),
        ("--gid-map", ":0:100000:65536:", { $0.gidMap = [IDMap(inside: 0, outside: 100000, count: 65536)] }),
        ("--translate-uid", "map:0:1000:1", {
            $0.translateUID = [.map(guestBase: 0, hostBase: 1000, count: 1)]
            $0.idTranslation = try? IDTranslations(uidRules: ["map:0:1000:1"], gidRules: [])
        }),
        ("--translate-gid", "squash-guest:0:1000:65536", {
            $0.translateGID = [.squashGuest(guestBase: 0, host: 1000, count: 65536)]
            $0.idTranslation = try? IDTranslations(uidRules: [], gidRules: ["squash-guest:0:1000:65536"])
        }),
    ]

    func testEveryValuedLongOptionMapsToTheModelInBothSpellings() {
        for (name, value, change) in valued {
            var expected = baseOptions()
            change(&expected)
            XCTAssertEqual(options(base + ["\(name)=\(value)"]), expected, "\(name)=\(value)")
            XCTAssertEqual(options(base + [name, value]), expected, "\(name) \(value)")
        }
    }

    func testEveryLongFlagMapsToTheModel() {
        let flags: [(String, (inout DaemonOptions) -> Void)] = [
            ("--xattr", { $0.xattr = true }),
            ("--posix-acl", { $0.posixACL = true }),
            ("--security-label", { $0.securityLabel = true }),
            ("--allow-mmap", { $0.allowMmap = true }),
            ("--no-readdirplus", { $0.readdirplus = false }),
            ("--writeback", { $0.writeback = true }),
            ("--allow-direct-io", { $0.allowDirectIO = true }),
            ("--announce-submounts", { $0.announceSubmounts = true }),
            ("--no-announce-submounts", { $0.announceSubmounts = false }),
            ("--inode-file-handles", { $0.inodeFileHandles = .prefer }),
            ("--inode-file-handles=never", { $0.inodeFileHandles = .never }),
            ("--inode-file-handles=prefer", { $0.inodeFileHandles = .prefer }),
            ("--inode-file-handles=fallback", { $0.inodeFileHandles = .prefer }),
            ("--inode-file-handles=mandatory", { $0.inodeFileHandles = .mandatory }),
            ("--readonly", { $0.readOnly = true }),
            ("--killpriv-v2", { $0.killprivV2 = true }),
            ("--no-killpriv-v2", { $0.killprivV2 = false }),
            ("--preserve-noatime", { $0.preserveNoatime = true }),
            ("--syslog", { $0.syslog = true }),
            ("-d", { $0.logLevel = .debug }),
            ("-f", { _ in }),
        ]
        for (flag, change) in flags {
            var expected = baseOptions()
            change(&expected)
            XCTAssertEqual(options(base + [flag]), expected, flag)
        }
    }

    func testFdReplacesTheSocketPath() {
        var expected = DaemonOptions()
        expected.sharedDir = "/srv"
        expected.fd = 3
        XCTAssertEqual(options(["--shared-dir=/srv", "--fd=3"]), expected)
        XCTAssertEqual(options(["--shared-dir", "/srv", "--fd", "3"]), expected)
        XCTAssertEqual(expected.endpoint, .inheritedSocket(3))
    }

    func testFuseMountNeedsNoSocket() {
        let o = options(["--shared-dir=/srv", "--fuse-mount", "/mnt/x"])
        XCTAssertEqual(o?.fuseMount, "/mnt/x")
        XCTAssertEqual(o?.endpoint, .fuseMount("/mnt/x"))
    }

    func testBareInodeFileHandlesDoesNotSwallowTheNextArgument() {
        let o = options(["--inode-file-handles", "--fd=3", "--shared-dir=/srv"])
        XCTAssertEqual(o?.inodeFileHandles, .prefer)
        XCTAssertEqual(o?.fd, 3)
    }

    func testLibvirtSessionModeMapsAreAllKept() {
        // What libvirt 11 passes an unprivileged daemon: the user's own id, then its subordinate range.
        let o = options(base + ["--uid-map=:0:1500:1:", "--uid-map=:1:100000:65536:",
                                "--gid-map=:0:1500:1:", "--gid-map=:1:100000:65536:", "--sandbox", "namespace"])
        let expected = [IDMap(inside: 0, outside: 1500, count: 1), IDMap(inside: 1, outside: 100000, count: 65536)]
        XCTAssertEqual(o?.uidMap, expected)
        XCTAssertEqual(o?.gidMap, expected)
    }

    func testIdentityOptionsInTheDashOSyntaxMatchTheLongOnes() {
        let long = options(base + ["--uid-map=:0:1000:1:", "--gid-map=:0:1000:1:",
                                   "--translate-uid=squash-guest:0:1000:4294967295", "--translate-uid=host:1000:0:1",
                                   "--translate-gid=map:0:1000:1"])
        let short = options(["--socket-path=/run/vfs.sock", "-o",
                             "source=/srv,uid_map=:0:1000:1:,gid_map=:0:1000:1:,translate_uid=squash-guest:0:1000:4294967295,"
                             + "translate_uid=host:1000:0:1,translate_gid=map:0:1000:1"])
        XCTAssertNotNil(long)
        XCTAssertEqual(long, short)
        XCTAssertEqual(long?.idTranslation?.uid.toHost(5), 1000)
        XCTAssertEqual(long?.idTranslation?.uid.toGuest(1000), 0)
        XCTAssertEqual(long?.idTranslation?.gid.toHost(0), 1000)
    }

    func testRepeatedMapsAccumulateAndOtherOptionsLastWins() {
        let o = options(base + ["--uid-map=:0:1000:1:", "--uid-map=:1:2000:10:",
                                "--cache=never", "--cache=always", "--shared-dir=/b",
                                "--log-level=trace", "-d"])
        XCTAssertEqual(o?.uidMap, [IDMap(inside: 0, outside: 1000, count: 1),
                                   IDMap(inside: 1, outside: 2000, count: 10)])
        XCTAssertEqual(o?.cache, .always)
        XCTAssertEqual(o?.sharedDir, "/b")
        XCTAssertEqual(o?.logLevel, .debug)
    }

    func testSharedDirAndSourceBothGivenTheLastWins() {
        XCTAssertEqual(options(["--fd=3", "--shared-dir=/a", "-o", "source=/b"])?.sharedDir, "/b")
        XCTAssertEqual(options(["--fd=3", "-o", "source=/b", "--shared-dir=/a"])?.sharedDir, "/a")
    }

    func testDefaultsFollowTheRustDaemon() {
        let o = DaemonOptions()
        XCTAssertEqual(o.cache, .auto)
        XCTAssertEqual(o.sandbox, .namespace)
        XCTAssertEqual(o.seccomp, .kill)
        XCTAssertEqual(o.logLevel, .info)
        XCTAssertEqual(o.threadPoolSize, 0)
        XCTAssertEqual(o.numRequestQueues, 16)
        XCTAssertTrue(o.announceSubmounts)
        XCTAssertTrue(o.killprivV2)
        XCTAssertFalse(o.xattrEnabled)
        XCTAssertFalse(o.flock)
        XCTAssertFalse(o.posixLocks)
        XCTAssertTrue(o.readdirplusEnabled)
        XCTAssertEqual(o.inodeFileHandles, .never)
        XCTAssertEqual(o.effectiveTimeout, 1)
        XCTAssertNil(o.rlimitNofile)
    }
}

final class QemuStyleTests: XCTestCase {
    func testEverySubOptionMapsToTheModelSeparateAndGlued() {
        let cases: [(String, (inout DaemonOptions) -> Void)] = [
            ("debug", { $0.logLevel = .debug }),
            ("source=/export", { $0.sharedDir = "/export" }),
            ("cache=none", { $0.cache = .never }),
            ("cache=auto", { $0.cache = .auto }),
            ("cache=always", { $0.cache = .always }),
            ("cache=metadata", { $0.cache = .metadata }),
            ("flock", { $0.flock = true }),
            ("no_flock", { $0.flock = false }),
            ("posix_lock", { $0.posixLocks = true }),
            ("no_posix_lock", { $0.posixLocks = false }),
            ("log_level=err", { $0.logLevel = .error }),
            ("log_level=warn", { $0.logLevel = .warning }),
            ("log_level=info", { $0.logLevel = .info }),
            ("log_level=debug", { $0.logLevel = .debug }),
            ("loglevel=warn", { $0.logLevel = .warning }),
            ("modcaps=+sys_admin:-chown", {
                $0.modcaps = [CapabilityChange(add: true, name: "sys_admin"),
                              CapabilityChange(add: false, name: "chown")]
            }),
            ("norace", { _ in }),
            ("readdirplus", { $0.readdirplus = true }),
            ("no_readdirplus", { $0.readdirplus = false }),
            ("sandbox=namespace", { $0.sandbox = .namespace }),
            ("sandbox=chroot", { $0.sandbox = .chroot }),
            ("timeout=0.5", { $0.timeout = 0.5 }),
            ("timeout=30", { $0.timeout = 30 }),
            ("timeout=0", { $0.timeout = 0 }),
            ("timeout=.25", { $0.timeout = 0.25 }),
            ("timeout=2.", { $0.timeout = 2 }),
            ("writeback", { $0.writeback = true }),
            ("no_writeback", { $0.writeback = false }),
            ("xattr", { $0.xattr = true }),
            ("no_xattr", { $0.xattr = false }),
            ("posix_acl", { $0.posixACL = true }),
            ("no_posix_acl", { $0.posixACL = false }),
            ("xattrmap=:prefix:all::user.virtiofs.::bad:all:::", {
                $0.xattrMap = try? XattrMap(rules: ":prefix:all::user.virtiofs.::bad:all:::")
            }),
            ("announce_submounts", { $0.announceSubmounts = true }),
            ("killpriv_v2", { $0.killprivV2 = true }),
            ("no_killpriv_v2", { $0.killprivV2 = false }),
            ("allow_direct_io", { $0.allowDirectIO = true }),
            ("no_allow_direct_io", { $0.allowDirectIO = false }),
            ("security_label", { $0.securityLabel = true }),
            ("no_security_label", { $0.securityLabel = false }),
        ]
        for (entry, change) in cases {
            var expected = baseOptions()
            change(&expected)
            XCTAssertEqual(options(base + ["-o", entry]), expected, "-o \(entry)")
            XCTAssertEqual(options(base + ["-o" + entry]), expected, "-o\(entry)")
        }
    }

    func testListsRepeatedDashOAndShortFlagsCombine() {
        var expected = DaemonOptions()
        expected.socketPath = "/tmp/vfs.sock"
        expected.sharedDir = "/srv"
        expected.cache = .always
        expected.xattr = true
        expected.writeback = true
        expected.threadPoolSize = 8
        expected.logLevel = .debug
        let args = ["--socket-path=/tmp/vfs.sock", "-o", "source=/srv,cache=always", "-oxattr",
                    "-o", "writeback", "--thread-pool-size=8", "-d", "-f"]
        XCTAssertEqual(options(args), expected)
    }

    func testDoubledCommaIsACommaInsideAValue() {
        XCTAssertEqual(options(["--fd=3", "-o", "source=/srv/a,,b"])?.sharedDir, "/srv/a,b")
        XCTAssertEqual(options(["--fd=3", "-o", "source=/a,,,,b"])?.sharedDir, "/a,,b")
        // ",,," is an escaped comma followed by a separator.
        let o = options(["--fd=3", "-o", "source=/a,,,xattr"])
        XCTAssertEqual(o?.sharedDir, "/a,")
        XCTAssertEqual(o?.xattr, true)
        XCTAssertEqual(options(["--fd=3", "-o", "source=/srv,xattrmap=:prefix:all:a,,b:user.::ok:all:::"])?.xattrMap,
                       try? XattrMap(rules: ":prefix:all:a,b:user.::ok:all:::"))
    }

    func testEmptyEntriesInAListAreIgnored() {
        XCTAssertEqual(options(["--fd=3", "-o", "source=/srv,"])?.sharedDir, "/srv")
        XCTAssertEqual(options(["--fd=3", "-o", ",source=/srv,,"])?.sharedDir, "/srv,")
    }

    func testValueMayContainAnEqualsSign() {
        XCTAssertEqual(options(["--fd=3", "-o", "source=/a=b"])?.sharedDir, "/a=b")
        XCTAssertEqual(options(["--fd=3", "--shared-dir=/a=b"])?.sharedDir, "/a=b")
    }
}

/// The exact argument lists management tools produce.
final class ReferenceCommandLineTests: XCTestCase {
    func testLibvirt90WithLocksAndXattr() {
        let args = ["--fd=3", "-o", "source=/srv/a,,b,cache=always,sandbox=chroot,xattr,flock,posix_lock",
                    "--thread-pool-size=2"]
        var expected = DaemonOptions()
        expected.fd = 3
        expected.sharedDir = "/srv/a,b"
        expected.cache = .always
        expected.sandbox = .chroot
        expected.xattr = true
        expected.flock = true
        expected.posixLocks = true
        expected.threadPoolSize = 2
        XCTAssertEqual(options(args), expected)
    }

    func testLibvirt90WithLocksAndXattrOff() {
        let args = ["--fd=3", "-o",
                    "source=/srv/a,,b,cache=always,sandbox=chroot,no_xattr,no_flock,no_posix_lock",
                    "--thread-pool-size=2"]
        var expected = DaemonOptions()
        expected.fd = 3
        expected.sharedDir = "/srv/a,b"
        expected.cache = .always
        expected.sandbox = .chroot
        expected.threadPoolSize = 2
        XCTAssertEqual(options(args), expected)
        XCTAssertEqual(options(args)?.xattrEnabled, false)
    }

    func testRustDaemonLongForm() {
        let args = ["--fd=3", "--shared-dir=/srv", "--cache=auto", "--xattr", "--sandbox=chroot"]
        var expected = DaemonOptions()
        expected.fd = 3
        expected.sharedDir = "/srv"
        expected.cache = .auto
        expected.xattr = true
        expected.sandbox = .chroot
        XCTAssertEqual(options(args), expected)
    }
}

final class DerivedSettingsTests: XCTestCase {
    func testXattrIsImpliedByAclsLabelsAndMaps() {
        XCTAssertEqual(options(base + ["--posix-acl"])?.xattrEnabled, true)
        XCTAssertEqual(options(base + ["--security-label"])?.xattrEnabled, true)
        XCTAssertEqual(options(base + ["--xattrmap=:ok:all:::"])?.xattrEnabled, true)
        XCTAssertEqual(options(base + ["-o", "xattrmap=:ok:all:::,no_xattr"])?.xattrEnabled, true)
        XCTAssertEqual(options(base + ["-o", "xattr,no_xattr"])?.xattrEnabled, false)
    }

    func testReaddirplusIsOffWithCacheNeverUnlessAskedFor() {
        XCTAssertEqual(options(base + ["--cache=never"])?.readdirplusEnabled, false)
        XCTAssertEqual(options(base + ["-o", "cache=none,readdirplus"])?.readdirplusEnabled, true)
        XCTAssertEqual(options(base + ["--cache=always"])?.readdirplusEnabled, true)
        XCTAssertEqual(options(base + ["--no-readdirplus"])?.readdirplusEnabled, false)
    }

    func testTimeoutFollowsTheCacheModeUnlessGiven() {
        XCTAssertEqual(options(base + ["--cache=never"])?.effectiveTimeout, 0)
        XCTAssertEqual(options(base + ["--cache=auto"])?.effectiveTimeout, 1)
        XCTAssertEqual(options(base + ["--cache=metadata"])?.effectiveTimeout, 86400)
        XCTAssertEqual(options(base + ["--cache=always"])?.effectiveTimeout, 86400)
        XCTAssertEqual(options(base + ["-o", "cache=always,timeout=2.5"])?.effectiveTimeout, 2.5)
    }

    func testEndpointCarriesTheSocketGroup() {
        XCTAssertEqual(options(base + ["--socket-group=kvm"])?.endpoint,
                       .socketPath("/run/vfs.sock", group: "kvm"))
    }
}

final class CompatibilitySpellingTests: XCTestCase {
    func testRustSocketAliasSetsTheSocketPath() {
        XCTAssertEqual(options(["--socket=/run/a.sock", "--shared-dir=/srv"])?.socketPath, "/run/a.sock")
        XCTAssertEqual(options(["--socket", "/run/b.sock", "--shared-dir=/srv"])?.socketPath, "/run/b.sock")
    }

    func testDaemonizeIsAccepted() {
        XCTAssertEqual(options(base + ["--daemonize"])?.daemonize, true)
        XCTAssertEqual(options(base)?.daemonize, false)
    }

    func testLibfuseOptionsWithoutMeaningAreAcceptedWithAWarning() {
        let o = options(base + ["-o", "allow_root,max_idle_threads=10"])
        XCTAssertEqual(o?.warnings.count, 2)
        XCTAssertTrue(o?.warnings.allSatisfy { $0.contains("has no effect") } ?? false, "\(o?.warnings ?? [])")
        var expected = baseOptions()
        expected.warnings = o?.warnings ?? []
        XCTAssertEqual(o, expected, "they change nothing else")
    }

    func testStatsPathIsOffByDefault() {
        XCTAssertNil(options(base)?.statsPath)
        XCTAssertEqual(options(base + ["--stats=/run/vfs.stats"])?.statsPath, "/run/vfs.stats")
    }

    func testSuggestionsComeOnlyForNearSpellings() {
        XCTAssertEqual(closest("cahce", among: longOptions.keys), "cache")
        XCTAssertEqual(closest("sandbx", among: longOptions.keys), "sandbox")
        XCTAssertNil(closest("bogus", among: longOptions.keys))
        XCTAssertNil(closest("x", among: longOptions.keys))
        XCTAssertEqual(editDistance(Array("ab".utf8), Array("ba".utf8)), 1)
    }
}
