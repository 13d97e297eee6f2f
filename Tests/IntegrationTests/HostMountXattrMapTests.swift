import Foundation
import XCTest

/// Extended attribute name mapping and POSIX ACLs through the daemon's host mount,
/// checked with the ordinary tools (setfattr/getfattr, setfacl/getfacl) on both sides.
final class HostMountXattrMapTests: XCTestCase {
    /// Every guest name gets `user.virtiofs.` in front on the host; every other host name is hidden.
    static let prefixEverything = ":prefix:all::user.virtiofs.::bad:all:::"

    private func tool(_ name: String) throws -> String {
        guard let path = programPath(name) else { throw XCTSkip("\(name) is not installed") }
        return path
    }

    func testPrefixRuleStoresGuestNamesUnderThePrefixOnTheHost() throws {
        let setfattr = try tool("setfattr"), getfattr = try tool("getfattr")
        let daemon = try HostMountDaemon(arguments: ["--xattr", "--xattrmap=\(Self.prefixEverything)"]) { share in
            FileManager.default.createFile(atPath: share + "/f", contents: Data("x".utf8))
            // Set on the host before start, without the prefix: the guest must not see it.
            XCTAssertEqual(try runProgram(setfattr, ["-n", "user.foo", "-v", "host", share + "/f"]).status, 0)
        }
        let mounted = daemon.mountpoint + "/f", host = daemon.share + "/f"

        let set = try runProgram(setfattr, ["-n", "trusted.overlay.x", "-v", "1", mounted])
        XCTAssertEqual(set.status, 0, set.output + daemon.log())
        // The host file carries the prefixed name, in the unprivileged user namespace.
        let onHost = try runProgram(getfattr, ["--absolute-names", "--only-values", "-n", "user.virtiofs.trusted.overlay.x", host])
        XCTAssertEqual(onHost.status, 0, onHost.output)
        XCTAssertEqual(onHost.output, "1")
        XCTAssertNotEqual(try runProgram(getfattr, ["--absolute-names", "-n", "trusted.overlay.x", host]).status, 0, "nothing lands in trusted.* on the host")

        // The guest lists its own name, without the prefix, and nothing of the host's.
        let dump = try runProgram(getfattr, ["--absolute-names", "-d", "-m", "-", mounted])
        XCTAssertEqual(dump.status, 0, dump.output)
        XCTAssertTrue(dump.output.contains("trusted.overlay.x=\"1\""), dump.output)
        XCTAssertFalse(dump.output.contains("user.virtiofs"), "the prefix never shows: \(dump.output)")
        XCTAssertFalse(dump.output.contains("user.foo"), "an unprefixed host name is hidden: \(dump.output)")
        // Asked for by name, user.foo means user.virtiofs.user.foo on the host: absent.
        let direct = try runProgram(getfattr, ["--absolute-names", "-n", "user.foo", mounted])
        XCTAssertNotEqual(direct.status, 0, direct.output)
        XCTAssertTrue(direct.output.contains("No such attribute"), direct.output)

        // A guest user.* name goes under the prefix too, and removal takes the prefixed name away.
        XCTAssertEqual(try runProgram(setfattr, ["-n", "user.guest", "-v", "g", mounted]).status, 0)
        XCTAssertEqual(try runProgram(getfattr, ["--absolute-names", "--only-values", "-n", "user.virtiofs.user.guest", host]).output, "g")
        XCTAssertEqual(try runProgram(setfattr, ["-x", "trusted.overlay.x", mounted]).status, 0)
        XCTAssertNotEqual(try runProgram(getfattr, ["--absolute-names", "-n", "user.virtiofs.trusted.overlay.x", host]).status, 0)
        // The host's own attribute is untouched by all of this.
        XCTAssertEqual(try runProgram(getfattr, ["--absolute-names", "--only-values", "-n", "user.foo", host]).output, "host")
        XCTAssertEqual(daemon.stop(), 0, daemon.log())
    }

    /// The same commands in the mount and in a plain directory; returns both outputs.
    private func onBothSides(_ daemon: HostMountDaemon, _ body: (String) throws -> String) rethrows -> (mount: String, plain: String) {
        let mount = try body(daemon.mountpoint)
        let plain = try body(daemon.plain)
        return (mount.replacingOccurrences(of: daemon.mountpoint, with: "DIR"), plain.replacingOccurrences(of: daemon.plain, with: "DIR"))
    }

    func testDefaultACLIsInheritedAsOnAPlainDirectory() throws {
        let setfacl = try tool("setfacl"), getfacl = try tool("getfacl")
        let daemon = try HostMountDaemon(arguments: ["--xattr", "--posix-acl"])
        let result = try onBothSides(daemon) { dir in
            var log = ""
            XCTAssertEqual(mkdir(dir + "/inherit", 0o755), 0)
            let set = try runProgram(setfacl, ["-d", "-m", "u:1000:rwx", dir + "/inherit"])
            log += "setfacl \(set.status) \(set.output)\n"
            let fd = open(dir + "/inherit/new", O_CREAT | O_WRONLY, 0o666)
            log += "create \(fd >= 0)\n"
            close(fd)
            XCTAssertEqual(mkdir(dir + "/inherit/subdir", 0o777), 0)
            for name in ["inherit", "inherit/new", "inherit/subdir"] {
                let acl = try runProgram(getfacl, ["-c", "-n", dir + "/" + name])
                log += "\(name):\n\(acl.output)"
            }
            return log
        }
        XCTAssertTrue(result.plain.contains("user:1000:rwx"), result.plain)
        XCTAssertTrue(result.mount.contains("default:user:1000:rwx"), "the directory keeps its default ACL: \(result.mount)")
        XCTAssertEqual(result.mount, result.plain)
        XCTAssertEqual(daemon.stop(), 0, daemon.log())
    }

    func testAccessACLLetsAnotherUserReadAPrivateFileAsOnAPlainDirectory() throws {
        let setfacl = try tool("setfacl"), setpriv = try tool("setpriv"), cat = try tool("cat")
        let daemon = try HostMountDaemon(arguments: ["--xattr", "--posix-acl"])
        let asUser1000 = ["--reuid=1000", "--regid=1000", "--clear-groups", cat]
        let result = try onBothSides(daemon) { dir in
            var log = ""
            for name in ["granted", "private"] {
                XCTAssertTrue(FileManager.default.createFile(atPath: dir + "/" + name, contents: Data("secret \(name)\n".utf8)))
                chmod(dir + "/" + name, 0o600)
            }
            let set = try runProgram(setfacl, ["-m", "u:1000:r", dir + "/granted"])
            log += "setfacl \(set.status) \(set.output)\n"
            for name in ["granted", "private"] {
                let read = try runProgram(setpriv, asUser1000 + [dir + "/" + name])
                log += "uid 1000 reads \(name): \(read.status) \(read.output)"
            }
            let removed = try runProgram(setfacl, ["-b", dir + "/granted"])
            log += "setfacl -b \(removed.status)\n"
            let again = try runProgram(setpriv, asUser1000 + [dir + "/granted"])
            log += "uid 1000 reads granted after removal: \(again.status) \(again.output)"
            return log
        }
        XCTAssertTrue(result.plain.contains("uid 1000 reads granted: 0 secret granted"), result.plain)
        XCTAssertTrue(result.plain.contains("reads private: 1"), result.plain)
        XCTAssertEqual(result.mount, result.plain)
        XCTAssertEqual(daemon.stop(), 0, daemon.log())
    }
}
