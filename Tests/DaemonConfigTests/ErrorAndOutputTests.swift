import Foundation
import XCTest
@testable import DaemonConfig
import Options
import XattrMap

final class OptionErrorTests: XCTestCase {
    /// (arguments, the exact one-line message).
    let cases: [([String], String)] = [
        (base + ["--bogus"], "unknown option '--bogus'"),
        (base + ["--bogus=1"], "unknown option '--bogus'"),
        (base + ["-x"], "unknown option '-x'"),
        (base + ["--"], "unknown option '--'"),
        (base + ["stray"], "unexpected argument 'stray'"),
        (base + ["-o", "bogus"], "unknown option '-o bogus'"),
        (base + ["-o", "xattr,bogus=1"], "unknown option '-o bogus'"),
        (base + ["-o", "allow_rot"], "unknown option '-o allow_rot'; did you mean '-o allow_root'?"),
        (base + ["--cahce=auto"], "unknown option '--cahce'; did you mean '--cache'?"),
        (base + ["--shared-dri=/srv"], "unknown option '--shared-dri'; did you mean '--shared-dir'?"),
        (base + ["-o", "posix_lcok"], "unknown option '-o posix_lcok'; did you mean '-o posix_lock'?"),
        (base + ["-shared-dir=/srv"], "unknown option '-shared-dir=/srv'; did you mean '--shared-dir'?"),
        (base + ["--inode-file-handles", "prefer"],
         "unexpected argument 'prefer': '--inode-file-handles' takes its value only after '=': write '--inode-file-handles=prefer'"),
        (base + ["-o", "max_idle_threads=many"],
         "invalid value 'many' for '-o max_idle_threads': expected a whole number"),
        (base + ["--shared-dir"], "option '--shared-dir' needs a value"),
        (base + ["--shared-dir="], "option '--shared-dir' needs a value"),
        (base + ["--cache", "--xattr"], "option '--cache' needs a value"),
        (base + ["-o"], "option '-o' needs a value"),
        (base + ["-o", "-d"], "option '-o' needs a value"),
        (base + ["-o", ","], "option '-o' needs a value"),
        (base + ["-o", "source"], "option '-o source' needs a value"),
        (base + ["-o", "source="], "option '-o source' needs a value"),
        (base + ["--xattr=yes"], "option '--xattr' does not take a value"),
        (base + ["--print-capabilities=1"], "option '--print-capabilities' does not take a value"),
        (base + ["-o", "xattr=1"], "option '-o xattr' does not take a value"),
        (base + ["--cache=fast"],
         "invalid value 'fast' for '--cache': expected one of auto, always, metadata, never, none"),
        (base + ["-o", "cache=fast"],
         "invalid value 'fast' for '-o cache': expected one of auto, always, metadata, never, none"),
        (base + ["--sandbox=jail"],
         "invalid value 'jail' for '--sandbox': expected one of namespace, chroot, none"),
        (base + ["--seccomp=allow"],
         "invalid value 'allow' for '--seccomp': expected one of none, kill, log, trap"),
        (base + ["--log-level=loud"],
         "invalid value 'loud' for '--log-level': expected one of off, err, error, warn, info, debug, trace"),
        (base + ["-o", "log_level=loud"],
         "invalid value 'loud' for '-o log_level': expected one of off, err, error, warn, info, debug, trace"),
        (base + ["--inode-file-handles=always"],
         "invalid value 'always' for '--inode-file-handles': expected one of never, prefer, fallback, mandatory"),
        (["--fd=three", "--shared-dir=/srv"],
         "invalid value 'three' for '--fd': expected a file descriptor number"),
        (["--fd", "3x", "--shared-dir=/srv"],
         "invalid value '3x' for '--fd': expected a file descriptor number"),
        (["--fd=2147483648", "--shared-dir=/srv"],
         "invalid value '2147483648' for '--fd': expected a file descriptor number"),
        (["--fd=-1", "--shared-dir=/srv"],
         "invalid value '-1' for '--fd': expected a file descriptor number"),
        (base + ["--thread-pool-size=1025"],
         "invalid value '1025' for '--thread-pool-size': expected a number from 0 to 1024"),
        (base + ["--thread-pool-size=+4"],
         "invalid value '+4' for '--thread-pool-size': expected a number from 0 to 1024"),
        (base + ["--num-request-queues=0"],
         "invalid value '0' for '--num-request-queues': expected a number from 1 to 16"),
        (base + ["--num-request-queues=17"],
         "invalid value '17' for '--num-request-queues': expected a number from 1 to 16"),
        (base + ["--rlimit-nofile=99999999999999999999"],
         "invalid value '99999999999999999999' for '--rlimit-nofile': expected a whole number"),
        (base + ["-o", "timeout=-1"],
         "invalid value '-1' for '-o timeout': expected a number of seconds, 0 or more"),
        (base + ["-o", "timeout=nan"],
         "invalid value 'nan' for '-o timeout': expected a number of seconds, 0 or more"),
        (base + ["-o", "timeout=1e3"],
         "invalid value '1e3' for '-o timeout': expected a number of seconds, 0 or more"),
        (base + ["-o", "timeout=1.2.3"],
         "invalid value '1.2.3' for '-o timeout': expected a number of seconds, 0 or more"),
        (base + ["--modcaps=sys_admin"],
         "invalid value 'sys_admin' for '--modcaps': expected a colon-separated list of +name or -name, e.g. +sys_admin:-chown"),
        (base + ["-o", "modcaps=+sys_admin::-chown"],
         "invalid value '+sys_admin::-chown' for '-o modcaps': expected a colon-separated list of +name or -name, e.g. +sys_admin:-chown"),
        (base + ["--modcaps=+"],
         "invalid value '+' for '--modcaps': expected a colon-separated list of +name or -name, e.g. +sys_admin:-chown"),
        (base + ["--uid-map=0:1000:1"],
         "invalid value '0:1000:1' for '--uid-map': it must have the form :inside:outside:count:"),
        (base + ["--gid-map=:0:1000:0:"],
         "invalid value ':0:1000:0:' for '--gid-map': the count must be at least 1"),
        (base + ["--uid-map=:4294967295:0:2:"],
         "invalid value ':4294967295:0:2:' for '--uid-map': the range runs past the largest id (4294967294)"),
        (base + ["-o", "uid_map=:0:x:1:"],
         "invalid value ':0:x:1:' for '-o uid_map': \"x\" is not a number from 0 to 4294967295"),
        (base + ["--translate-uid=swap:0:1:1"],
         "invalid value 'swap:0:1:1' for '--translate-uid': invalid rule \"swap:0:1:1\": unknown type \"swap\"; one of guest, host, squash-guest, squash-host, forbid-guest, map"),
        (base + ["--translate-gid=map:0:1000:0"],
         "invalid value 'map:0:1000:0' for '--translate-gid': invalid rule \"map:0:1000:0\": the count must be at least 1"),
        (base + ["--translate-uid=map:0:1000:10", "--translate-uid=forbid-guest:5:1"],
         "invalid value 'forbid-guest:5:1' for '--translate-uid': rule \"forbid-guest:5:1\" overlaps \"map:0:1000:10\": both translate some of the same guest ids; give each guest id at most one rule"),
        (base + ["-o", "translate_gid=squash-host:0:1:10,translate_gid=host:9:0:1"],
         "invalid value 'host:9:0:1' for '-o translate_gid': rule \"host:9:0:1\" overlaps \"squash-host:0:1:10\": both translate some of the same host ids; give each host id at most one rule"),
        (base + ["--tag=0123456789012345678901234567890123456"],
         "invalid value '0123456789012345678901234567890123456' for '--tag': a tag is at most 36 bytes"),
        (["--shared-dir=/srv", "--fd=3", "--socket-path=/s"],
         "options '--fd' and '--socket-path' cannot be used together"),
        (["--shared-dir=/srv", "--fd=3", "--fuse-mount=/mnt"],
         "options '--fuse-mount' and '--fd' cannot be used together"),
        (["--shared-dir=/srv", "--socket-path=/s", "--fuse-mount=/mnt"],
         "options '--fuse-mount' and '--socket-path' cannot be used together"),
        (["--shared-dir=/srv", "--fd=3", "--socket-group=kvm"],
         "options '--socket-group' and '--fd' cannot be used together"),
        (["--shared-dir=/srv"],
         "no vhost-user socket: give '--socket-path=PATH' or '--fd=N' (or '--fuse-mount=MOUNTPOINT')"),
        ([],
         "no vhost-user socket: give '--socket-path=PATH' or '--fd=N' (or '--fuse-mount=MOUNTPOINT')"),
        (["--fd=3"], "no shared directory: give '--shared-dir=DIR' or '-o source=DIR'"),
        (["--fd=3", "-o", "xattr"], "no shared directory: give '--shared-dir=DIR' or '-o source=DIR'"),
    ]

    func testEachBadCommandLineGivesItsExactMessage() {
        for (args, message) in cases {
            switch parseCommandLine(args) {
            case .failure(let e):
                XCTAssertEqual(e.description, message, "\(args)")
                XCTAssertFalse(e.description.contains("\n"), "\(args)")
                XCTAssertTrue(e.description.contains(e.option), "\(args): message must name the option")
            case .success(let outcome):
                XCTFail("\(args): expected '\(message)', got \(outcome)")
            }
        }
    }

    func testTheFirstBadArgumentIsReported() {
        guard case .failure(let e) = parseCommandLine(["--cache=x", "--bogus"]) else {
            return XCTFail("expected an error")
        }
        XCTAssertEqual(e.option, "--cache")
    }

    func testBadXattrMapIsAnOptionErrorFromTheRuleParser() {
        guard case .failure(let e) = parseCommandLine(base + ["--xattrmap=:ok:all::"]) else {
            return XCTFail("expected an error")
        }
        XCTAssertEqual(e.option, "--xattrmap")
        XCTAssertTrue(e.description.hasPrefix("invalid value ':ok:all::' for '--xattrmap': xattrmap rule 1"), e.description)
    }
}

final class EnvironmentTests: XCTestCase {
    func testMissingSharedDirectoryIsReported() {
        var o = baseOptions()
        o.sharedDir = "/nope"
        XCTAssertEqual(validateEnvironment(o, checkDirectory: { $0 == "/nope" ? .missing : .directory })?.description,
                       "shared directory '/nope' does not exist")
    }

    func testUnreadableSharedDirectorySaysWhyNotThatItIsMissing() {
        var o = baseOptions()
        o.sharedDir = "/root/private"
        let message = validateEnvironment(o, checkDirectory: { _ in .inaccessible("Permission denied") })?.description
        XCTAssertEqual(message, "shared directory '/root/private': Permission denied")
    }

    func testAFileIsNotASharedDirectory() {
        XCTAssertEqual(validateEnvironment(baseOptions(), checkDirectory: { _ in .notADirectory })?.description,
                       "shared directory '/srv' is not a directory")
    }

    func testMissingFuseMountPointIsReported() {
        var o = baseOptions()
        o.socketPath = nil
        o.fuseMount = "/mnt/gone"
        XCTAssertEqual(validateEnvironment(o, checkDirectory: { $0 == "/srv" ? .directory : .missing })?.description,
                       "mount point '/mnt/gone' does not exist")
    }

    func testTranslationRulesPassTheEnvironmentCheck() {
        var o = baseOptions()
        o.translateGID = [.map(guestBase: 0, hostBase: 0, count: 1)]
        XCTAssertNil(validateEnvironment(o, checkDirectory: { _ in .directory }))
    }

    func testGoodEnvironmentPasses() {
        XCTAssertNil(validateEnvironment(baseOptions(), checkDirectory: { _ in .directory }))
    }
}

final class OutcomeTests: XCTestCase {
    func testPrintCapabilitiesIsJSONWithTypeFsAndOnlyFeaturesWeHave() throws {
        guard case .success(.printCapabilities(let text)) = parseCommandLine(["--print-capabilities"]) else {
            return XCTFail("expected capabilities")
        }
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        XCTAssertEqual(object?["type"] as? String, "fs")
        XCTAssertEqual(object?["features"] as? [String], ["migrate-precopy", "separate-options"])
        XCTAssertEqual(object?.count, 2)
    }

    func testPrintCapabilitiesWinsOverBadOptionsAndHelp() {
        let lines = [["--bogus", "--print-capabilities"], ["--print-capabilities", "--cache=fast"],
                     ["-o", "nonsense", "--print-capabilities", "--help"], ["--fd=x", "--print-capabilities"],
                     ["--fd=3", "--socket-path=/s", "--print-capabilities"]]
        for args in lines {
            XCTAssertEqual(parseCommandLine(args), .success(.printCapabilities(capabilitiesJSON)), "\(args)")
        }
    }

    func testHelpAndVersionWinOverBadOptions() {
        XCTAssertEqual(parseCommandLine(["-h"]), .success(.help(usageText)))
        XCTAssertEqual(parseCommandLine(["--bogus", "--help"]), .success(.help(usageText)))
        XCTAssertEqual(parseCommandLine(["--version", "--help"]), .success(.help(usageText)))
        XCTAssertEqual(parseCommandLine(["-V"]), .success(.version(versionText)))
        XCTAssertEqual(parseCommandLine(["--cache=fast", "--version"]), .success(.version(versionText)))
        XCTAssertTrue(versionText.contains(daemonVersion))
    }

    func testUsageListsEveryOption() {
        for name in longOptions.keys {
            XCTAssertTrue(usageText.contains("--\(name)"), "--\(name) missing from usage")
        }
        for name in subOptions.keys {
            XCTAssertTrue(usageText.contains(name), "-o \(name) missing from usage")
        }
        for short in ["-h,", "-V,", "-d,", "-f ", "-o "] {
            XCTAssertTrue(usageText.contains(short), "\(short) missing from usage")
        }
    }

    func testUsageLinesFitAnEightyColumnTerminal() {
        for line in usageText.split(separator: "\n") {
            XCTAssertLessThanOrEqual(line.count, 80, String(line))
        }
    }
}

final class InstalledFileTests: XCTestCase {
    /// Tests/DaemonConfigTests/<this file> -> the package root.
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    func testManPageDocumentsEveryOption() throws {
        let page = try String(contentsOf: root.appendingPathComponent("docs/virtiofsd.1"), encoding: .utf8)
        // roff writes a literal hyphen as \-.
        let text = page.replacingOccurrences(of: "\\-", with: "-")
        for name in longOptions.keys {
            XCTAssertTrue(text.contains("--\(name)"), "--\(name) missing from the man page")
        }
        for name in subOptions.keys {
            XCTAssertTrue(text.contains(name), "-o \(name) missing from the man page")
        }
    }

    func testVhostUserManifestIsJSONWithTheBinaryPlaceholder() throws {
        let text = try String(contentsOf: root.appendingPathComponent("docs/50-swift-virtiofsd.json.in"),
                              encoding: .utf8)
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        XCTAssertEqual(object?["type"] as? String, "fs")
        XCTAssertEqual(object?["binary"] as? String, "@BINARY@")
        XCTAssertNotNil(object?["description"] as? String)
    }
}
