import XCTest
import Foundation
import Glibc
import CVirtioFS
import FUSE
import Posix
import Options
@testable import Passthrough

final class SecurityAndXattrTests: PassthroughTestCase {
    func setx(_ node: NodeID, _ key: String, _ value: String, flags: Int32 = 0) throws {
        let bytes = Array(value.utf8)
        try bytes.withUnsafeBytes { try fs.setxattr(root, node: node, name: name(key), value: $0, flags: UInt32(flags), extFlags: 0) }
    }

    func getx(_ node: NodeID, _ key: String, capacity: Int = 256) throws -> String {
        var buffer = [UInt8](repeating: 0, count: capacity)
        let n = try buffer.withUnsafeMutableBytes { try fs.getxattr(root, node: node, name: name(key), into: $0) }
        return String(decoding: buffer[0..<n], as: UTF8.self)
    }

    func listx(_ node: NodeID) throws -> [String] {
        let size = try fs.listxattr(root, node: node, into: nil)
        var buffer = [UInt8](repeating: 0, count: size)
        let n = try buffer.withUnsafeMutableBytes { try fs.listxattr(root, node: node, into: $0) }
        XCTAssertEqual(n, size, "the size query matches the listing")
        return buffer[0..<n].split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    func testXattrSetGetListRemoveAndSizeQueries() throws {
        writeHostFile("x", "data")
        let node = try fs.lookup(root, parent: rootNodeID, name: name("x")).nodeID
        try setx(node, "user.colour", "blue")
        XCTAssertEqual(try getx(node, "user.colour"), "blue")
        XCTAssertEqual(try fs.getxattr(root, node: node, name: name("user.colour"), into: nil), 4, "size query")
        assertErrno(.range) { try getx(node, "user.colour", capacity: 2) }
        assertErrno(.noData) { try getx(node, "user.missing") }
        assertErrno(.exists) { try setx(node, "user.colour", "red", flags: CVFS_XATTR_CREATE) }
        assertErrno(.noData) { try setx(node, "user.other", "red", flags: CVFS_XATTR_REPLACE) }
        try setx(node, "user.shape", "round")
        XCTAssertEqual(Set(try listx(node)), ["user.colour", "user.shape"])
        var tiny = [UInt8](repeating: 0, count: 3)
        assertErrno(.range) { try tiny.withUnsafeMutableBytes { try fs.listxattr(root, node: node, into: $0) } }
        try fs.removexattr(root, node: node, name: name("user.colour"))
        assertErrno(.noData) { try getx(node, "user.colour") }
        assertErrno(.noData) { try fs.removexattr(root, node: node, name: name("user.colour")) }
        // Directories too.
        try setx(rootNodeID, "user.dir", "yes")
        XCTAssertEqual(try getx(rootNodeID, "user.dir"), "yes")
    }

    func testXattrsOnSymlinksAndSpecialFilesUseTheLinkItself() throws {
        symlink("target-that-does-not-exist", hostPath("sl"))
        mkfifo(hostPath("fifo"), 0o644)
        let link = try fs.lookup(root, parent: rootNodeID, name: name("sl")).nodeID
        let fifo = try fs.lookup(root, parent: rootNodeID, name: name("fifo")).nodeID
        // user.* xattrs are not allowed on symlinks by the kernel; trusted.* are (for root).
        try setx(link, "trusted.tag", "on-link")
        XCTAssertEqual(try getx(link, "trusted.tag"), "on-link")
        XCTAssertTrue(try listx(link).contains("trusted.tag"))
        // The target does not exist, so the value can only be on the link; check with the host tool too.
        let tool = Process()
        tool.executableURL = URL(fileURLWithPath: "/usr/bin/getfattr")
        tool.arguments = ["-h", "--only-values", "-n", "trusted.tag", hostPath("sl")]
        let pipe = Pipe()
        tool.standardOutput = pipe
        try tool.run()
        tool.waitUntilExit()
        XCTAssertEqual(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self), "on-link")
        try fs.removexattr(root, node: link, name: name("trusted.tag"))
        // The kernel refuses user.* on special files, as on the host.
        assertErrno(.permissionDenied) { try setx(fifo, "user.pipe", "p") }
        try setx(fifo, "trusted.pipe", "p")
        XCTAssertEqual(try getx(fifo, "trusted.pipe"), "p")
    }

    func testXattrsSwitchedOffAreNotImplemented() throws {
        fs = try makeFileSystem { $0.xattr = false }
        assertErrno(.noSys) { try getx(rootNodeID, "user.a") }
        assertErrno(.noSys) { try fs.listxattr(root, node: rootNodeID, into: nil) }
    }

    func testSetgidClearedWhenAccessACLIsSetWithKillSgid() throws {
        writeHostFile("acl", "x")
        chmod(hostPath("acl"), 0o2775)
        chown(hostPath("acl"), 0, 50)
        let node = try fs.lookup(root, parent: rootNodeID, name: name("acl")).nodeID
        // A minimal access ACL equal to mode 0775 (version 2; USER_OBJ, GROUP_OBJ, OTHER).
        var acl: [UInt8] = [2, 0, 0, 0]
        for (tag, perm) in [(UInt16(0x01), UInt16(7)), (0x04, 7), (0x20, 5)] {
            acl += withUnsafeBytes(of: tag.littleEndian, Array.init)
            acl += withUnsafeBytes(of: perm.littleEndian, Array.init)
            acl += withUnsafeBytes(of: UInt32.max.littleEndian, Array.init)
        }
        try acl.withUnsafeBytes {
            try fs.setxattr(user, node: node, name: name("system.posix_acl_access"), value: $0, flags: 0,
                            extFlags: UInt32(FUSE_SETXATTR_ACL_KILL_SGID))
        }
        XCTAssertEqual(hostStat("acl").st_mode & 0o7777, 0o775, "setgid cleared for a caller outside the group")
    }

    func testSymlinkEscapeResolvesToTheLinkAndIsNeverFollowed() throws {
        symlink("/", hostPath("escape"))
        symlink("/etc/passwd", hostPath("passwd"))
        let entry = try fs.lookup(root, parent: rootNodeID, name: name("escape"))
        XCTAssertEqual(entry.attributes.st_mode & S_IFMT, S_IFLNK, "lookup gives the symlink itself")
        assertErrno(.notDirectory) { try fs.opendir(root, node: entry.nodeID, flags: 0) }
        assertErrno(.loop) { try fs.open(root, node: entry.nodeID, flags: UInt32(O_RDONLY), killSuidGid: false) }
        // Looking up below the link does not go through it.
        assertErrno(.notDirectory) { try fs.lookup(root, parent: entry.nodeID, name: name("etc")) }
        let passwd = try fs.lookup(root, parent: rootNodeID, name: name("passwd"))
        assertErrno(.loop) { try fs.open(root, node: passwd.nodeID, flags: UInt32(O_RDONLY), killSuidGid: false) }
        // setattr on the link changes the link, never /etc/passwd.
        let before = try FileManager.default.attributesOfItem(atPath: "/etc/passwd")[.modificationDate] as? Date
        var times = SetAttributes(valid: .mtime)
        times.mtime = timespec(tv_sec: 5, tv_nsec: 0)
        _ = try fs.setattr(root, node: passwd.nodeID, times)
        XCTAssertEqual(try FileManager.default.attributesOfItem(atPath: "/etc/passwd")[.modificationDate] as? Date, before)
        assertErrno(.invalidArgument) {
            var t = SetAttributes(valid: .size)
            t.size = 0
            return try fs.setattr(root, node: passwd.nodeID, t)
        }
        XCTAssertGreaterThan(hostStat("../../etc/passwd").st_size, 0)
    }

    func testNamesWithSlashesDotsOrNulsAreRejected() throws {
        mkdir(hostPath("sub"), 0o755)
        let sub = try fs.lookup(root, parent: rootNodeID, name: name("sub")).nodeID
        assertErrno(.invalidArgument) { try fs.lookup(root, parent: rootNodeID, name: name("sub/..")) }
        assertErrno(.invalidArgument) { try fs.lookup(root, parent: rootNodeID, name: name("/etc")) }
        assertErrno(.invalidArgument) { try fs.mkdir(root, parent: sub, name: name(".."), mode: 0o755, extras: CreateExtras()) }
        assertErrno(.invalidArgument) { try fs.unlink(root, parent: sub, name: name(".")) }
        assertErrno(.invalidArgument) {
            try fs.rename(root, parent: sub, name: name(".."), newParent: rootNodeID, newName: name("x"), flags: 0)
        }
        assertErrno(.noEntry) { try fs.lookup(root, parent: rootNodeID, name: name("")) }
        // "..\0x": the system call would see "..".
        let sneaky = strdup("..\0x")!
        let withNul = FileName(cString: sneaky, count: 4)
        assertErrno(.invalidArgument) { try fs.lookup(root, parent: rootNodeID, name: withNul) }
        assertErrno(.invalidArgument) { try fs.create(root, parent: sub, name: withNul, mode: S_IFREG | 0o644, flags: 2, extras: CreateExtras()) }
    }

    func testDotDotFromTheRootStaysAtTheRoot() throws {
        let up = try fs.lookup(root, parent: rootNodeID, name: name(".."))
        XCTAssertEqual(up.nodeID, rootNodeID)
        let here = try fs.lookup(root, parent: rootNodeID, name: name("."))
        XCTAssertEqual(here.nodeID, rootNodeID)
        // From a subdirectory ".." is its parent inside the share.
        mkdir(hostPath("a"), 0o755)
        mkdir(hostPath("a/b"), 0o755)
        let a = try fs.lookup(root, parent: rootNodeID, name: name("a")).nodeID
        let b = try fs.lookup(root, parent: a, name: name("b")).nodeID
        XCTAssertEqual(try fs.lookup(root, parent: b, name: name("..")).nodeID, a)
        XCTAssertEqual(try fs.lookup(root, parent: a, name: name("..")).nodeID, rootNodeID)
    }

    func testDotDotOfADirectoryMovedOutOfTheShareDoesNotEscape() throws {
        mkdir(hostPath("inside"), 0o755)
        let node = try fs.lookup(root, parent: rootNodeID, name: name("inside")).nodeID
        let outside = directory + "-outside"
        mkdir(outside, 0o755)
        defer { _ = try? FileManager.default.removeItem(atPath: outside) }
        XCTAssertEqual(Glibc.rename(hostPath("inside"), outside + "/moved"), 0)
        assertErrno(.noEntry) { try fs.lookup(root, parent: node, name: name("..")) }
    }

    func testFdBudgetSwitchesToFileHandlesAndLookupsKeepWorking() throws {
        fs = try makeFileSystem { $0.fdBudget = 8 }
        let files = 200
        for i in 0..<files { writeHostFile("h\(i)", "content \(i)") }
        var nodes: [NodeID] = []
        for i in 0..<files { nodes.append(try fs.lookup(root, parent: rootNodeID, name: name("h\(i)")).nodeID) }
        XCTAssertLessThanOrEqual(fs.descriptorCount.value.load(ordering: .relaxed), 8, "no more descriptors than the budget")
        let handleBacked = fs.inodes.allData.filter { $0.isHandle }.count
        XCTAssertGreaterThanOrEqual(handleBacked, files - 8)
        // Handle-backed inodes work for every operation: stat, open, read, lookup again.
        let last = nodes[files - 1]
        XCTAssertEqual(try fs.getattr(root, node: last, handle: nil).attributes.st_size, off_t("content \(files - 1)".utf8.count))
        let handle = try fs.open(root, node: last, flags: UInt32(O_RDONLY), killSuidGid: false).handle
        XCTAssertEqual(try read(last, handle), "content \(files - 1)")
        XCTAssertEqual(try fs.lookup(root, parent: rootNodeID, name: name("h\(files - 1)")).nodeID, last)
        try setx(last, "user.k", "v")
        XCTAssertEqual(try getx(last, "user.k"), "v")
        var chmod = SetAttributes(valid: .mode)
        chmod.mode = 0o600
        XCTAssertEqual(try fs.setattr(root, node: last, chmod).attributes.st_mode & 0o777, 0o600)
        // Special files and symlinks held by handle too.
        mkfifo(hostPath("fifo"), 0o644)
        symlink("nowhere", hostPath("link"))
        let fifo = try fs.lookup(root, parent: rootNodeID, name: name("fifo")).nodeID
        let link = try fs.lookup(root, parent: rootNodeID, name: name("link")).nodeID
        XCTAssertTrue((fs.inodes.data(fifo)?.isHandle ?? false))
        XCTAssertEqual(try fs.setattr(root, node: fifo, chmod).attributes.st_mode & 0o777, 0o600)
        var times = SetAttributes(valid: .mtime)
        times.mtime = timespec(tv_sec: 99, tv_nsec: 1)
        XCTAssertEqual(try fs.setattr(root, node: link, times).attributes.st_mtim.tv_sec, 99)
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = try buffer.withUnsafeMutableBytes { try fs.readlink(root, node: link, into: $0) }
        XCTAssertEqual(String(decoding: buffer[0..<n], as: UTF8.self), "nowhere")
        try setx(fifo, "trusted.t", "1")
        XCTAssertEqual(try getx(fifo, "trusted.t"), "1")
    }

    func testMandatoryFileHandlesHoldNoDescriptors() throws {
        mkdir(hostPath("d"), 0o755)
        writeHostFile("d/f", "hi")
        fs = try makeFileSystem { $0.inodeFileHandles = .mandatory }
        let before = fs.descriptorCount.value.load(ordering: .relaxed)
        let d = try fs.lookup(root, parent: rootNodeID, name: name("d")).nodeID
        let f = try fs.lookup(root, parent: d, name: name("f")).nodeID
        XCTAssertEqual(fs.descriptorCount.value.load(ordering: .relaxed), before)
        let h = try fs.open(root, node: f, flags: UInt32(O_RDONLY), killSuidGid: false).handle
        XCTAssertEqual(try read(f, h), "hi")
        let listing = try listDirectory(d)
        XCTAssertEqual(Set(listing.names), [".", "..", "f"])
    }

    func testConcurrentLookupsAndForgetsKeepCountsConsistent() throws {
        for i in 0..<20 { writeHostFile("c\(i)", "x") }
        let fs = self.fs!
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for round in 0..<50 {
                let n = "c\(round % 20)"
                let p = strdup(n)!
                if let e = try? fs.lookup(RequestContext(), parent: rootNodeID, name: FileName(cString: p, count: strlen(p))) {
                    fs.forget(e.nodeID, count: 1)
                }
                free(p)
            }
        }
        XCTAssertEqual(fs.inodes.count, 1, "every lookup was forgotten: only the root is left")
        XCTAssertEqual(fs.descriptorCount.value.load(ordering: .relaxed), 1, "and their descriptors are closed")
    }
}
