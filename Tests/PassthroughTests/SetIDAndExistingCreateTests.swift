import XCTest
import Foundation
import Glibc
import CVirtioFS
import FUSE
import Posix
@testable import Passthrough

/// CREATE of a name someone else made first, and setuid/setgid on writes and truncates.
final class SetIDAndExistingCreateTests: PassthroughTestCase {
    func hostContents(_ relative: String) -> String? {
        try? String(contentsOfFile: hostPath(relative), encoding: .utf8)
    }

    func makeHostFile(_ relative: String, _ contents: String, mode: mode_t, uid: uid_t = 0, gid: gid_t = 0) {
        writeHostFile(relative, contents)
        XCTAssertEqual(chown(hostPath(relative), uid, gid), 0)
        XCTAssertEqual(chmod(hostPath(relative), mode), 0)
    }

    func createExisting(_ ctx: RequestContext, _ relative: String, _ flags: Int32) throws(Errno) -> (Entry, OpenReply) {
        try fs.create(ctx, parent: rootNodeID, name: name(relative), mode: S_IFREG | 0o644, flags: UInt32(flags), extras: CreateExtras())
    }

    func nodeCount() -> Int { fs.inodes.count }
    func handleCount() -> Int { fs.handles.withLock { $0.files.count } }

    // MARK: - CREATE of an existing name

    func testCreateOfAnExistingFileIsCheckedWithTheCallersCredentials() throws {
        // The directory lets uid 1000 create, so the guest kernel would send CREATE; the
        // host made "secret" first (a race the guest user lost, or a raw CREATE).
        chmod(directory, 0o777)
        makeHostFile("secret", "root only", mode: 0o600)
        let nodes = nodeCount()
        let handles = handleCount()
        assertErrno(.accessDenied) { try createExisting(user, "secret", O_RDWR) }
        assertErrno(.accessDenied) { try createExisting(user, "secret", O_RDONLY) }
        assertErrno(.accessDenied) { try createExisting(user, "secret", O_WRONLY | O_TRUNC) }
        assertErrno(.accessDenied) { try createExisting(user, "secret", O_RDONLY | O_TRUNC) }
        XCTAssertEqual(hostContents("secret"), "root only", "the file is untouched")
        XCTAssertEqual(hostStat("secret").st_mode & 0o7777, 0o600)
        XCTAssertEqual(nodeCount(), nodes, "a refused CREATE leaves no node behind")
        XCTAssertEqual(handleCount(), handles, "nor a handle")
        // Root may, as on the host.
        let (entry, opened) = try createExisting(root, "secret", O_RDONLY)
        XCTAssertEqual(try read(entry.nodeID, opened.handle), "root only")
        XCTAssertEqual(geteuid(), 0, "the daemon's identity is back")
    }

    func testCreateOfAnExistingFileIsCheckedAsTheCallerWhenInodesAreFileHandles() throws {
        chmod(directory, 0o777)
        makeHostFile("secret", "root only", mode: 0o600)
        makeHostFile("public", "for all", mode: 0o644)
        fs = try makeFileSystem { $0.inodeFileHandles = .mandatory }
        assertErrno(.accessDenied) { try createExisting(user, "secret", O_WRONLY | O_TRUNC) }
        XCTAssertEqual(hostContents("secret"), "root only")
        let (entry, opened) = try createExisting(user, "public", O_RDONLY)
        XCTAssertTrue(fs.inodes.data(entry.nodeID)?.isHandle ?? false)
        XCTAssertEqual(try read(entry.nodeID, opened.handle), "for all")
    }

    func testCreateOfAnExistingFileTheCallerMayOpenStillOpens() throws {
        chmod(directory, 0o777)
        makeHostFile("public", "for all", mode: 0o644)
        let (entry, opened) = try createExisting(user, "public", O_RDONLY)
        XCTAssertEqual(entry.attributes.st_uid, 0, "the existing file, not a new one")
        XCTAssertEqual(try read(entry.nodeID, opened.handle), "for all")
        XCTAssertEqual(lookupCount(entry.nodeID), 1, "the entry took one lookup")
        assertErrno(.accessDenied) { try createExisting(user, "public", O_WRONLY) }

        makeHostFile("scratch", "old contents", mode: 0o666)
        let (scratch, handle) = try createExisting(user, "scratch", O_RDWR | O_TRUNC)
        XCTAssertEqual(hostStat("scratch").st_size, 0, "O_TRUNC truncated as the caller")
        XCTAssertEqual(try write(scratch.nodeID, handle.handle, "new"), 3)
        XCTAssertEqual(hostContents("scratch"), "new")

        makeHostFile("own", "mine", mode: 0o600, uid: 1000, gid: 1000)
        XCTAssertNoThrow(try createExisting(user, "own", O_RDWR))
        // O_EXCL still means "must not exist".
        assertErrno(.exists) { try createExisting(user, "own", O_RDWR | O_EXCL) }
    }

    func testCreateOfAnExistingSpecialFileOpensNothing() throws {
        chmod(directory, 0o777)
        XCTAssertEqual(mkfifo(hostPath("fifo"), 0o666), 0)
        XCTAssertEqual(mknod(hostPath("null"), S_IFCHR | 0o666, dev_t(1 << 8 | 3)), 0, "mknod 1:3 (the null device)")
        XCTAssertEqual(symlink("/etc/passwd", hostPath("link")), 0)
        XCTAssertEqual(mkdir(hostPath("dir"), 0o777), 0)
        let handles = handleCount()
        for ctx in [user, root] {
            // A FIFO would block the thread, a device node would be the host's device.
            assertErrno(.permissionDenied) { try createExisting(ctx, "fifo", O_RDWR) }
            assertErrno(.permissionDenied) { try createExisting(ctx, "null", O_RDWR) }
            assertErrno(.loop) { try createExisting(ctx, "link", O_RDONLY) }
            assertErrno(.isDirectory) { try createExisting(ctx, "dir", O_RDONLY) }
        }
        XCTAssertEqual(handleCount(), handles)
    }

    // MARK: - setuid and setgid

    func writeAs(_ ctx: RequestContext, _ node: NodeID, _ handle: HandleID, killSuidGid: Bool) throws(Errno) {
        var reader = MemoryReader(Array("data".utf8))
        _ = try fs.write(ctx, node: node, handle: handle, offset: 0, size: 4, flags: 0, killSuidGid: killSuidGid, from: &reader)
    }

    func mode(_ relative: String) -> mode_t { hostStat(relative).st_mode & 0o7777 }

    func negotiate(killprivV2: Bool) throws {
        fs = try makeFileSystem { $0.killprivV2 = killprivV2 }
        _ = try fs.initialize(capable: InitFlags(rawValue: UInt64.max))
        XCTAssertEqual(fs.isNegotiated(.handleKillprivV2), killprivV2)
    }

    func testWriteKillFlagIsHonouredWithoutKillprivV2() throws {
        // Direct I/O (cache=none, metadata): the guest kernel sets the flag and clears nothing itself.
        for v2 in [false, true] {
            try negotiate(killprivV2: v2)
            makeHostFile("suid", "x", mode: 0o6777)
            let node = try fs.lookup(root, parent: rootNodeID, name: name("suid")).nodeID
            let handle = try fs.open(root, node: node, flags: UInt32(O_RDWR), killSuidGid: false).handle
            try writeAs(user, node, handle, killSuidGid: false)
            XCTAssertEqual(mode("suid"), 0o6777, "no flag (the caller has CAP_FSETID): kept, v2 \(v2)")
            try writeAs(user, node, handle, killSuidGid: true)
            XCTAssertEqual(mode("suid"), 0o0777, "flagged write: setuid and group-exec setgid go, v2 \(v2)")
        }
    }

    func testSetgidWithoutGroupExecGoesOnlyForACallerOutsideTheGroup() throws {
        try negotiate(killprivV2: false)
        makeHostFile("sgid", "x", mode: 0o2666, gid: 1000)
        let node = try fs.lookup(root, parent: rootNodeID, name: name("sgid")).nodeID
        let handle = try fs.open(root, node: node, flags: UInt32(O_RDWR), killSuidGid: false).handle
        try writeAs(user, node, handle, killSuidGid: true)
        XCTAssertEqual(mode("sgid"), 0o2666, "the caller is in the file's group")
        let outsider = RequestContext(unique: 3, uid: 2000, gid: 2000, pid: 3)
        try writeAs(outsider, node, handle, killSuidGid: true)
        XCTAssertEqual(mode("sgid"), 0o0666)
    }

    func testTruncateByANonOwnerClearsSetIDWithoutKillprivV2() throws {
        try negotiate(killprivV2: false)
        makeHostFile("t", "contents", mode: 0o6777)
        let node = try fs.lookup(root, parent: rootNodeID, name: name("t")).nodeID
        var truncate = SetAttributes(valid: [.size])
        truncate.size = 0
        // Root and the owner keep the bits (the guest kernel, without v2, said nothing).
        _ = try fs.setattr(root, node: node, truncate)
        XCTAssertEqual(mode("t"), 0o6777)
        chown(hostPath("t"), 1000, 1000)
        chmod(hostPath("t"), 0o6777)
        _ = try fs.setattr(user, node: node, truncate)
        XCTAssertEqual(mode("t"), 0o6777, "the owner")
        chown(hostPath("t"), 0, 0)
        chmod(hostPath("t"), 0o6777)
        _ = try fs.setattr(user, node: node, truncate)
        XCTAssertEqual(mode("t"), 0o0777, "SETATTR size by a non-owner")

        chmod(hostPath("t"), 0o6777)
        let handle = try fs.open(root, node: node, flags: UInt32(O_RDWR), killSuidGid: false).handle
        truncate.handle = handle
        _ = try fs.setattr(user, node: node, truncate)
        XCTAssertEqual(mode("t"), 0o0777, "ftruncate through a handle by a non-owner")

        chmod(hostPath("t"), 0o6777)
        _ = try fs.open(root, node: node, flags: UInt32(O_RDWR | O_TRUNC), killSuidGid: false)
        XCTAssertEqual(mode("t"), 0o6777, "O_TRUNC by root")
        _ = try fs.open(user, node: node, flags: UInt32(O_RDWR | O_TRUNC), killSuidGid: false)
        XCTAssertEqual(mode("t"), 0o0777, "O_TRUNC by a non-owner")
    }

    func testWithKillprivV2TheGuestKernelsFlagDecidesTruncates() throws {
        try negotiate(killprivV2: true)
        makeHostFile("t", "contents", mode: 0o6777, uid: 1000, gid: 1000)
        let node = try fs.lookup(root, parent: rootNodeID, name: name("t")).nodeID
        _ = try fs.open(user, node: node, flags: UInt32(O_RDWR | O_TRUNC), killSuidGid: false)
        XCTAssertEqual(mode("t"), 0o6777, "no flag: the caller has CAP_FSETID")
        _ = try fs.open(user, node: node, flags: UInt32(O_RDWR | O_TRUNC), killSuidGid: true)
        XCTAssertEqual(mode("t"), 0o0777, "flagged: cleared, even for the owner, as the kernel does")
        chmod(hostPath("t"), 0o6777)
        var truncate = SetAttributes(valid: [.size, .killSuidGid])
        truncate.size = 0
        _ = try fs.setattr(user, node: node, truncate)
        XCTAssertEqual(mode("t"), 0o0777)
    }

    func testCreateWithTruncOfAnExistingSetuidFileClearsTheBitsForANonOwner() throws {
        chmod(directory, 0o777)
        makeHostFile("s", "program", mode: 0o6777)
        _ = try createExisting(user, "s", O_WRONLY | O_TRUNC)
        XCTAssertEqual(hostStat("s").st_size, 0)
        XCTAssertEqual(mode("s"), 0o0777, "the host kernel cleared them for the caller")
        chmod(hostPath("s"), 0o6777)
        _ = try createExisting(root, "s", O_WRONLY | O_TRUNC)
        XCTAssertEqual(mode("s"), 0o6777, "root keeps them")
    }
}
