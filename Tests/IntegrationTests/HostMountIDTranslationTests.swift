import Foundation
import XCTest

/// `--translate-uid` / `--translate-gid` through the daemon's host mount: the kernel's
/// callers play the guest, the share's real owners are the host side.
final class HostMountIDTranslationTests: XCTestCase {
    private func tool(_ name: String) throws -> String {
        guard let path = programPath(name) else { throw XCTSkip("\(name) is not installed") }
        return path
    }

    /// stat's "uid:gid" of `path`.
    private func owner(_ path: String) -> String {
        var st = stat()
        guard lstat(path, &st) == 0 else { return "error \(errno)" }
        return "\(st.st_uid):\(st.st_gid)"
    }

    /// A share everyone may write in, so a translated caller can create files.
    private func openShare(_ share: String) {
        chmod(share, 0o1777)
    }

    func testGuestRootWritesAsTheMappedHostIDAndSeesItselfAsRoot() throws {
        let daemon = try HostMountDaemon(arguments: ["--translate-uid=map:0:5000:1", "--translate-gid=map:0:6000:1"]) { share in
            self.openShare(share)
            FileManager.default.createFile(atPath: share + "/hosts-own", contents: Data("x".utf8))
            chown(share + "/hosts-own", 5000, 6000)
            FileManager.default.createFile(atPath: share + "/unmapped", contents: Data("y".utf8))
            chown(share + "/unmapped", 7000, 7000)
        }
        // Created by root through the mount: host ids 5000:6000, shown back as root's.
        XCTAssertTrue(FileManager.default.createFile(atPath: daemon.mountpoint + "/made-by-root", contents: Data("z".utf8)), daemon.log())
        XCTAssertEqual(owner(daemon.share + "/made-by-root"), "5000:6000")
        XCTAssertEqual(owner(daemon.mountpoint + "/made-by-root"), "0:0")
        XCTAssertEqual(mkdir(daemon.mountpoint + "/dir-by-root", 0o755), 0)
        XCTAssertEqual(owner(daemon.share + "/dir-by-root"), "5000:6000")
        // Host files: the mapped owner shows as root, another one as itself.
        XCTAssertEqual(owner(daemon.mountpoint + "/hosts-own"), "0:0")
        XCTAssertEqual(owner(daemon.mountpoint + "/unmapped"), "7000:7000")
        // readdirplus entries carry the translated owner too (ls -n reads them).
        let ls = try runProgram(try tool("ls"), ["-n", daemon.mountpoint])
        XCTAssertTrue(ls.output.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 3 && fields[2] == "0" && fields[3] == "0" && fields.last == "hosts-own"
        }, ls.output)
        XCTAssertEqual(daemon.stop(), 0, daemon.log())
    }

    func testChownTranslatesTheNewOwnerAndForbiddenIDsAreRefused() throws {
        let daemon = try HostMountDaemon(arguments: ["--translate-uid=map:1000:2000:100", "--translate-gid=map:1000:3000:100",
                                                     "--translate-uid=forbid-guest:1100:100"]) { share in
            FileManager.default.createFile(atPath: share + "/f", contents: Data("x".utf8))
        }
        let mounted = daemon.mountpoint + "/f"
        XCTAssertEqual(chown(mounted, 1001, 1002), 0, "\(errno) \(daemon.log())")
        XCTAssertEqual(owner(daemon.share + "/f"), "2001:3002")
        XCTAssertEqual(owner(mounted), "1001:1002")
        // A forbidden guest uid may not be given to a file; the owner stays.
        XCTAssertEqual(chown(mounted, 1150, UInt32.max), -1)
        XCTAssertEqual(errno, EPERM)
        XCTAssertEqual(owner(daemon.share + "/f"), "2001:3002")
        // The gid alone still changes; untranslated ids pass through.
        XCTAssertEqual(chown(mounted, UInt32.max, 50), 0)
        XCTAssertEqual(owner(daemon.share + "/f"), "2001:50")
        XCTAssertEqual(daemon.stop(), 0, daemon.log())
    }

    func testAForbiddenCallerCannotCreateFiles() throws {
        let setpriv = try tool("setpriv"), touch = try tool("touch")
        let daemon = try HostMountDaemon(arguments: ["--translate-uid=forbid-guest:1000:1"]) { share in
            self.openShare(share)
        }
        let asUser = { (uid: Int) in ["--reuid=\(uid)", "--regid=\(uid)", "--clear-groups", touch] }
        let refused = try runProgram(setpriv, asUser(1000) + [daemon.mountpoint + "/by-1000"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.output.contains("Operation not permitted"), refused.output)
        XCTAssertFalse(FileManager.default.fileExists(atPath: daemon.share + "/by-1000"))
        // Another user is not affected.
        XCTAssertEqual(try runProgram(setpriv, asUser(1001) + [daemon.mountpoint + "/by-1001"]).status, 0)
        XCTAssertEqual(owner(daemon.share + "/by-1001"), "1001:1001")
        XCTAssertEqual(daemon.stop(), 0, daemon.log())
    }

    /// The rootless model: every guest user writes as one host user, who is shown to the
    /// guest as uid 1000.
    func testSquashedGuestUsersAllWriteAsOneHostUser() throws {
        let setpriv = try tool("setpriv"), sh = try tool("sh")
        let daemon = try HostMountDaemon(arguments: ["--translate-uid=squash-guest:0:4321:4294967295", "--translate-uid=host:4321:1000:1",
                                                     "--translate-gid=squash-guest:0:4321:4294967295", "--translate-gid=host:4321:1000:1"]) { share in
            self.openShare(share)
        }
        XCTAssertTrue(FileManager.default.createFile(atPath: daemon.mountpoint + "/by-root", contents: nil), daemon.log())
        // Created with a redirect: touch would then set the times of a file the guest sees
        // as 1000's, which user 1234 may not.
        let byUser = try runProgram(setpriv, ["--reuid=1234", "--regid=1234", "--clear-groups", sh, "-c", "echo x > \"$0\"",
                                              daemon.mountpoint + "/by-1234"])
        XCTAssertEqual(byUser.status, 0, byUser.output)
        XCTAssertEqual(owner(daemon.share + "/by-root"), "4321:4321")
        XCTAssertEqual(owner(daemon.share + "/by-1234"), "4321:4321")
        XCTAssertEqual(owner(daemon.mountpoint + "/by-root"), "1000:1000")
        XCTAssertEqual(daemon.stop(), 0, daemon.log())
    }

    func testACLEntriesAreTranslatedBothWays() throws {
        let setfacl = try tool("setfacl"), getfacl = try tool("getfacl")
        let daemon = try HostMountDaemon(arguments: ["--xattr", "--posix-acl", "--translate-uid=map:1000:2000:10",
                                                     "--translate-gid=map:1000:3000:10", "--translate-uid=forbid-guest:1100:1"]) { share in
            FileManager.default.createFile(atPath: share + "/f", contents: Data("x".utf8))
            FileManager.default.createFile(atPath: share + "/g", contents: Data("x".utf8))
            XCTAssertEqual(try runProgram(setfacl, ["-m", "u:2005:r,g:3006:rw", share + "/g"]).status, 0)
        }
        // Set through the mount with guest ids: stored with host ids.
        let set = try runProgram(setfacl, ["-m", "u:1001:rw,g:1002:r,u:77:r", daemon.mountpoint + "/f"])
        XCTAssertEqual(set.status, 0, set.output + daemon.log())
        let onHost = try runProgram(getfacl, ["-c", "-n", daemon.share + "/f"]).output
        XCTAssertTrue(onHost.contains("user:2001:rw-"), onHost)
        XCTAssertTrue(onHost.contains("group:3002:r--"), onHost)
        XCTAssertTrue(onHost.contains("user:77:r--"), "an id outside the rules passes unchanged: \(onHost)")
        // Set on the host: shown with guest ids.
        let inMount = try runProgram(getfacl, ["-c", "-n", daemon.mountpoint + "/g"]).output
        XCTAssertTrue(inMount.contains("user:1005:r--"), inMount)
        XCTAssertTrue(inMount.contains("group:1006:rw-"), inMount)
        // A forbidden id in an ACL is refused as a chown to it would be.
        let forbidden = try runProgram(setfacl, ["-m", "u:1100:r", daemon.mountpoint + "/f"])
        XCTAssertNotEqual(forbidden.status, 0)
        XCTAssertTrue(forbidden.output.contains("Operation not permitted"), forbidden.output)
        XCTAssertFalse(try runProgram(getfacl, ["-c", "-n", daemon.share + "/f"]).output.contains("1100"))
        XCTAssertEqual(daemon.stop(), 0, daemon.log())
    }

    func testMalformedAndOverlappingRulesStopTheStartWithTheirReason() throws {
        try HostMountDaemon.requireHostMount()
        let cases: [([String], String)] = [
            (["--translate-uid=map:0:1000"], "invalid value 'map:0:1000' for '--translate-uid': invalid rule \"map:0:1000\": expected map:SOURCE:TARGET:COUNT"),
            (["--translate-gid=squash-guest:0:5:10", "--translate-gid=forbid-guest:9:1"],
             "rule \"forbid-guest:9:1\" overlaps \"squash-guest:0:5:10\""),
        ]
        for (arguments, message) in cases {
            let run = try runProgram(HostMountDaemon.binary, ["--fuse-mount=/nonexistent-mnt", "--shared-dir=/tmp"] + arguments)
            XCTAssertEqual(run.status, 1, run.output)
            XCTAssertTrue(run.output.contains(message), run.output)
        }
    }
}
