import XCTest
import Foundation
import Glibc
import CVirtioFS
import FUSE
import Posix
import Options
@testable import Passthrough

final class NodeTests: PassthroughTestCase {
    func testLookupTakesCountsAndForgetDropsTheNode() throws {
        writeHostFile("a", "hello")
        let first = try fs.lookup(root, parent: rootNodeID, name: name("a"))
        let second = try fs.lookup(root, parent: rootNodeID, name: name("a"))
        XCTAssertEqual(first.nodeID, second.nodeID, "the same host file is the same node")
        XCTAssertNotEqual(first.nodeID, rootNodeID)
        XCTAssertNotEqual(first.nodeID, UInt64(first.attributes.st_ino), "node ids are ours, not host inode numbers")
        XCTAssertEqual(first.generation, second.generation)
        XCTAssertEqual(lookupCount(first.nodeID), 2)
        fs.forget(first.nodeID, count: 1)
        XCTAssertNoThrow(try fs.getattr(root, node: first.nodeID, handle: nil))
        fs.forget(first.nodeID, count: 1)
        assertErrno(.badFileDescriptor) { try fs.getattr(root, node: first.nodeID, handle: nil) }
        // A new lookup gets a new node id, never a reused one.
        let third = try fs.lookup(root, parent: rootNodeID, name: name("a"))
        XCTAssertGreaterThan(third.nodeID, first.nodeID)
    }

    func testRootIsNeverForgotten() throws {
        fs.forget(rootNodeID, count: 1000)
        XCTAssertNoThrow(try fs.getattr(root, node: rootNodeID, handle: nil))
    }

    func testUnknownNodesAndHandlesAreErrorsNotTraps() {
        assertErrno(.badFileDescriptor) { try fs.getattr(root, node: 999, handle: nil) }
        assertErrno(.badFileDescriptor) { try fs.lookup(root, parent: 999, name: name("x")) }
        assertErrno(.badFileDescriptor) { try read(rootNodeID, 12345) }
        fs.forget(424242, count: 1)
        XCTAssertNoThrow(try fs.release(root, node: 1, handle: 777, flags: 0, lockOwner: nil, flush: false, flockRelease: false))
    }

    func testCreateWriteReadTruncate() throws {
        let (entry, opened) = try fs.create(root, parent: rootNodeID, name: name("f"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR), extras: CreateExtras())
        XCTAssertEqual(lookupCount(entry.nodeID), 1)
        XCTAssertEqual(try write(entry.nodeID, opened.handle, "hello world"), 11)
        XCTAssertEqual(try read(entry.nodeID, opened.handle), "hello world")
        XCTAssertEqual(try read(entry.nodeID, opened.handle, at: 6, size: 3), "wor")
        var truncate = SetAttributes(valid: .size)
        truncate.size = 5
        let after = try fs.setattr(root, node: entry.nodeID, truncate)
        XCTAssertEqual(after.attributes.st_size, 5)
        XCTAssertEqual(try String(contentsOfFile: hostPath("f"), encoding: .utf8), "hello")
        try fs.release(root, node: entry.nodeID, handle: opened.handle, flags: 0, lockOwner: nil, flush: true, flockRelease: false)
        assertErrno(.badFileDescriptor) { try read(entry.nodeID, opened.handle) }
        // O_EXCL on an existing name.
        assertErrno(.exists) {
            try fs.create(root, parent: rootNodeID, name: name("f"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR | O_EXCL), extras: CreateExtras())
        }
    }

    func testReadStopsAtTheReplyCapacity() throws {
        writeHostFile("big", String(repeating: "x", count: 100))
        let node = try fs.lookup(root, parent: rootNodeID, name: name("big")).nodeID
        let handle = try fs.open(root, node: node, flags: UInt32(O_RDONLY), killSuidGid: false).handle
        var writer = MemoryWriter(capacity: 10)
        XCTAssertEqual(try fs.read(root, node: node, handle: handle, offset: 0, size: 100, into: &writer), 10)
    }

    func testWriteShorterPayloadThanSizeIsRejected() throws {
        let (entry, opened) = try fs.create(root, parent: rootNodeID, name: name("w"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR), extras: CreateExtras())
        var reader = MemoryReader(Array("abc".utf8))
        assertErrno(.invalidArgument) {
            try fs.write(root, node: entry.nodeID, handle: opened.handle, offset: 0, size: 100, flags: 0, killSuidGid: false, from: &reader)
        }
        var huge = MemoryReader(Array("abc".utf8))
        assertErrno(.fileTooLarge) {
            try fs.write(root, node: entry.nodeID, handle: opened.handle, offset: UInt64.max - 1, size: 3, flags: 0, killSuidGid: false, from: &huge)
        }
    }

    func testMkdirAndRmdir() throws {
        let entry = try fs.mkdir(root, parent: rootNodeID, name: name("d"), mode: 0o755, extras: CreateExtras())
        XCTAssertEqual(entry.attributes.st_mode & S_IFMT, S_IFDIR)
        XCTAssertEqual(entry.attributes.st_mode & 0o777, 0o755, "the daemon's umask is 0: the guest's mode is used as sent")
        _ = try fs.create(root, parent: entry.nodeID, name: name("inner"), mode: S_IFREG | 0o600, flags: UInt32(O_RDWR), extras: CreateExtras())
        assertErrno(.notEmpty) { try fs.rmdir(root, parent: rootNodeID, name: name("d")) }
        try fs.unlink(root, parent: entry.nodeID, name: name("inner"))
        try fs.rmdir(root, parent: rootNodeID, name: name("d"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: hostPath("d")))
    }

    func testRenameWithEachFlag() throws {
        writeHostFile("a", "A")
        writeHostFile("b", "B")
        try fs.rename(root, parent: rootNodeID, name: name("a"), newParent: rootNodeID, newName: name("c"), flags: 0)
        XCTAssertEqual(try String(contentsOfFile: hostPath("c"), encoding: .utf8), "A")
        assertErrno(.exists) {
            try fs.rename(root, parent: rootNodeID, name: name("c"), newParent: rootNodeID, newName: name("b"), flags: CVFS_RENAME_NOREPLACE)
        }
        try fs.rename(root, parent: rootNodeID, name: name("c"), newParent: rootNodeID, newName: name("b"), flags: CVFS_RENAME_EXCHANGE)
        XCTAssertEqual(try String(contentsOfFile: hostPath("b"), encoding: .utf8), "A")
        XCTAssertEqual(try String(contentsOfFile: hostPath("c"), encoding: .utf8), "B")
        try fs.rename(root, parent: rootNodeID, name: name("c"), newParent: rootNodeID, newName: name("w"), flags: CVFS_RENAME_WHITEOUT)
        let whiteout = hostStat("c")
        XCTAssertEqual(whiteout.st_mode & S_IFMT, S_IFCHR, "a whiteout is a 0/0 character device")
        XCTAssertEqual(whiteout.st_rdev, 0)
        assertErrno(.invalidArgument) {
            try fs.rename(root, parent: rootNodeID, name: name("b"), newParent: rootNodeID, newName: name("z"), flags: 0x80)
        }
    }

    func testLinkRaisesLinkCountAndTakesALookup() throws {
        writeHostFile("orig", "x")
        let node = try fs.lookup(root, parent: rootNodeID, name: name("orig"))
        let linked = try fs.link(root, node: node.nodeID, newParent: rootNodeID, newName: name("second"))
        XCTAssertEqual(linked.nodeID, node.nodeID)
        XCTAssertEqual(linked.attributes.st_nlink, 2)
        XCTAssertEqual(lookupCount(node.nodeID), 2)
        XCTAssertEqual(hostStat("second").st_ino, hostStat("orig").st_ino)
    }

    func testSymlinkAndReadlink() throws {
        let entry = try fs.symlink(root, target: name("some/target"), parent: rootNodeID, name: name("ln"), extras: CreateExtras())
        XCTAssertEqual(entry.attributes.st_mode & S_IFMT, S_IFLNK)
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = try buffer.withUnsafeMutableBytes { (b) throws -> Int in try fs.readlink(root, node: entry.nodeID, into: b) }
        XCTAssertEqual(String(decoding: buffer[0..<n], as: UTF8.self), "some/target")
        let file = try fs.mknod(root, parent: rootNodeID, name: name("plain"), mode: S_IFREG | 0o644, rdev: 0, extras: CreateExtras())
        assertErrno(.invalidArgument) {
            try buffer.withUnsafeMutableBytes { (b) throws -> Int in try fs.readlink(root, node: file.nodeID, into: b) }
        }
    }

    func testMknodMakesFifosSocketsAndDevices() throws {
        let fifo = try fs.mknod(root, parent: rootNodeID, name: name("fifo"), mode: S_IFIFO | 0o600, rdev: 0, extras: CreateExtras())
        XCTAssertEqual(fifo.attributes.st_mode & S_IFMT, S_IFIFO)
        let sock = try fs.mknod(root, parent: rootNodeID, name: name("sock"), mode: S_IFSOCK | 0o600, rdev: 0, extras: CreateExtras())
        XCTAssertEqual(sock.attributes.st_mode & S_IFMT, S_IFSOCK)
        let dev = try fs.mknod(root, parent: rootNodeID, name: name("null"), mode: S_IFCHR | 0o600, rdev: UInt32((1 << 8) | 3), extras: CreateExtras())
        XCTAssertEqual(dev.attributes.st_mode & S_IFMT, S_IFCHR)
        // Special files are never opened for I/O by the daemon.
        assertErrno(.permissionDenied) { try fs.open(root, node: fifo.nodeID, flags: UInt32(O_RDONLY), killSuidGid: false) }
    }

    func testUnlinkWhileOpenKeepsTheDataReachable() throws {
        let (entry, opened) = try fs.create(root, parent: rootNodeID, name: name("gone"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR), extras: CreateExtras())
        _ = try write(entry.nodeID, opened.handle, "still here")
        try fs.unlink(root, parent: rootNodeID, name: name("gone"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: hostPath("gone")))
        XCTAssertEqual(try read(entry.nodeID, opened.handle), "still here")
        XCTAssertEqual(try fs.getattr(root, node: entry.nodeID, handle: nil).attributes.st_nlink, 0)
        assertErrno(.noEntry) { try fs.lookup(root, parent: rootNodeID, name: name("gone")) }
    }

    func testChmodChownAndUtimensWithNanosecondsAndOmit() throws {
        writeHostFile("m", "x")
        let node = try fs.lookup(root, parent: rootNodeID, name: name("m")).nodeID
        var chmod = SetAttributes(valid: .mode)
        chmod.mode = 0o640
        XCTAssertEqual(try fs.setattr(root, node: node, chmod).attributes.st_mode & 0o7777, 0o640)
        var chown = SetAttributes(valid: [.uid, .gid])
        chown.uid = 1234
        chown.gid = 5678
        let owned = try fs.setattr(root, node: node, chown).attributes
        XCTAssertEqual(owned.st_uid, 1234)
        XCTAssertEqual(owned.st_gid, 5678)
        let before = hostStat("m")
        var times = SetAttributes(valid: .mtime)
        times.mtime = timespec(tv_sec: 1_000_000_000, tv_nsec: 123_456_789)
        let after = try fs.setattr(root, node: node, times).attributes
        XCTAssertEqual(after.st_mtim.tv_sec, 1_000_000_000)
        XCTAssertEqual(after.st_mtim.tv_nsec, 123_456_789)
        XCTAssertEqual(after.st_atim.tv_sec, before.st_atim.tv_sec, "atime omitted")
        XCTAssertEqual(after.st_atim.tv_nsec, before.st_atim.tv_nsec, "atime omitted")
        // Symlinks: times change on the link itself.
        symlink("/nonexistent", hostPath("sl"))
        let link = try fs.lookup(root, parent: rootNodeID, name: name("sl")).nodeID
        var linkTimes = SetAttributes(valid: .atime)
        linkTimes.atime = timespec(tv_sec: 42, tv_nsec: 7)
        XCTAssertEqual(try fs.setattr(root, node: link, linkTimes).attributes.st_atim.tv_sec, 42)
    }

    func testSetuidIsClearedOnWriteWithKillSuidGid() throws {
        fs = try makeFileSystem { $0.killprivV2 = true }
        _ = try fs.initialize(capable: InitFlags(rawValue: UInt64.max))
        writeHostFile("suid", "x")
        chmod(hostPath("suid"), 0o6755)
        let node = try fs.lookup(root, parent: rootNodeID, name: name("suid")).nodeID
        let handle = try fs.open(root, node: node, flags: UInt32(O_RDWR), killSuidGid: false).handle
        _ = try write(node, handle, "y")
        XCTAssertEqual(hostStat("suid").st_mode & 0o7777, 0o6755, "root's write keeps the bits")
        _ = try write(node, handle, "z", killSuidGid: true)
        XCTAssertEqual(hostStat("suid").st_mode & 0o7777, 0o0755, "killpriv clears setuid and (group-exec) setgid")
        // SETATTR truncate with FATTR_KILL_SUIDGID.
        chmod(hostPath("suid"), 0o4755)
        var truncate = SetAttributes(valid: [.size, .killSuidGid])
        truncate.size = 0
        _ = try fs.setattr(root, node: node, truncate)
        XCTAssertEqual(hostStat("suid").st_mode & 0o7777, 0o0755)
        // OPEN with O_TRUNC and FUSE_OPEN_KILL_SUIDGID.
        chmod(hostPath("suid"), 0o4755)
        _ = try fs.open(root, node: node, flags: UInt32(O_RDWR | O_TRUNC), killSuidGid: true)
        XCTAssertEqual(hostStat("suid").st_mode & 0o7777, 0o0755)
        // Without killpriv v2 the flag still counts: the guest kernel sets it for direct I/O.
        _ = try fs.initialize(capable: [])
        chmod(hostPath("suid"), 0o4755)
        _ = try write(node, handle, "z", killSuidGid: true)
        XCTAssertEqual(hostStat("suid").st_mode & 0o7777, 0o0755)
    }

    func testCreationRunsWithTheCallersCredentials() throws {
        chmod(directory, 0o777)
        let (file, _) = try fs.create(user, parent: rootNodeID, name: name("mine"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR), extras: CreateExtras())
        XCTAssertEqual(file.attributes.st_uid, 1000)
        XCTAssertEqual(file.attributes.st_gid, 1000)
        let dir = try fs.mkdir(user, parent: rootNodeID, name: name("mydir"), mode: 0o700, extras: CreateExtras())
        XCTAssertEqual(dir.attributes.st_uid, 1000)
        let link = try fs.symlink(user, target: name("t"), parent: rootNodeID, name: name("mylink"), extras: CreateExtras())
        XCTAssertEqual(link.attributes.st_uid, 1000)
        var extras = CreateExtras()
        extras.supplementaryGroup = 4321
        let grouped = try fs.mknod(user, parent: rootNodeID, name: name("grouped"), mode: S_IFREG | 0o644, rdev: 0, extras: extras)
        XCTAssertEqual(grouped.attributes.st_uid, 1000)
        // The daemon's own identity is back afterwards.
        XCTAssertEqual(geteuid(), 0)
        XCTAssertEqual(getegid(), 0)
    }

    func testCreationAsTheCallerWorksInHandleBackedDirectories() throws {
        mkdir(hostPath("shared"), 0o777)
        fs = try makeFileSystem { $0.inodeFileHandles = .mandatory }
        let dir = try fs.lookup(root, parent: rootNodeID, name: name("shared")).nodeID
        XCTAssertTrue((fs.inodes.data(dir)?.isHandle ?? false))
        let made = try fs.mkdir(user, parent: dir, name: name("sub"), mode: 0o755, extras: CreateExtras())
        XCTAssertEqual(made.attributes.st_uid, 1000)
        let (file, _) = try fs.create(user, parent: dir, name: name("f"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR), extras: CreateExtras())
        XCTAssertEqual(file.attributes.st_uid, 1000)
        XCTAssertNoThrow(try fs.access(user, node: file.nodeID, mask: UInt32(R_OK | W_OK)))
    }

    func testTheDaemonsGroupsDoNotLendAccess() throws {
        // A directory writable only by group 0 (the daemon's group): uid 1000 in group 1000 may not create.
        mkdir(hostPath("group0"), 0o770)
        let dir = try fs.lookup(root, parent: rootNodeID, name: name("group0")).nodeID
        assertErrno(.accessDenied) { try fs.mkdir(user, parent: dir, name: name("x"), mode: 0o755, extras: CreateExtras()) }
        var extras = CreateExtras()
        extras.supplementaryGroup = 0
        // With group 0 as the caller's supplementary group the kernel allows it.
        XCTAssertNoThrow(try fs.mkdir(user, parent: dir, name: name("y"), mode: 0o755, extras: extras))
    }

    func testAccessFollowsACLs() throws {
        writeHostFile("acl", "x")
        chmod(hostPath("acl"), 0o600)
        let node = try fs.lookup(root, parent: rootNodeID, name: name("acl")).nodeID
        assertErrno(.accessDenied) { try fs.access(user, node: node, mask: UInt32(R_OK)) }
        let tool = Process()
        tool.executableURL = URL(fileURLWithPath: "/usr/bin/setfacl")
        tool.arguments = ["-m", "u:1000:r", hostPath("acl")]
        try tool.run()
        tool.waitUntilExit()
        XCTAssertNoThrow(try fs.access(user, node: node, mask: UInt32(R_OK)))
        assertErrno(.accessDenied) { try fs.access(user, node: node, mask: UInt32(W_OK)) }
    }

    func testOpenNeverCreates() throws {
        mkdir(hostPath("d"), 0o755)
        let dir = try fs.lookup(root, parent: rootNodeID, name: name("d")).nodeID
        // O_TMPFILE through OPEN on a directory would make a file as the daemon.
        if let opened = try? fs.open(root, node: dir, flags: UInt32(CVFS_O_TMPFILE | O_RDWR), killSuidGid: false) {
            let fd = fs.handles.withLock { $0.files[opened.handle]?.fd } ?? -1
            var st = stat()
            XCTAssertEqual(fstat(fd, &st), 0)
            XCTAssertEqual(st.st_mode & S_IFMT, S_IFDIR, "no unnamed file was made")
        }
        let handle = try fs.open(root, node: dir, flags: UInt32(O_RDONLY | O_CREAT), killSuidGid: false).handle
        let fd = fs.handles.withLock { $0.files[handle]?.fd } ?? -1
        XCTAssertEqual(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY)
    }

    func testBadSharedDirectoryFailsAtStart() {
        var missing = PassthroughConfiguration(root: directory + "/does-not-exist")
        missing.fdBudget = 10
        XCTAssertThrowsError(try PassthroughFileSystem(configuration: missing, logger: .discarding)) {
            XCTAssertEqual($0 as? Errno, .noEntry)
        }
        writeHostFile("file", "x")
        XCTAssertThrowsError(try PassthroughFileSystem(configuration: PassthroughConfiguration(root: hostPath("file")), logger: .discarding)) {
            XCTAssertEqual($0 as? Errno, .notDirectory)
        }
    }

    func testNoDescriptorsLeakOverASession() throws {
        func openDescriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }
        fs = nil
        let before = openDescriptors()
        do {
            let session = try makeFileSystem { $0.fdBudget = 4 }
            for i in 0..<10 {
                let (entry, opened) = try session.create(root, parent: rootNodeID, name: name("l\(i)"), mode: S_IFREG | 0o644,
                                                         flags: UInt32(O_RDWR), extras: CreateExtras())
                if i % 2 == 0 {
                    try session.release(root, node: entry.nodeID, handle: opened.handle, flags: 0, lockOwner: nil, flush: false, flockRelease: false)
                    session.forget(entry.nodeID, count: 1)
                }
            }
            _ = try session.opendir(root, node: rootNodeID, flags: 0)
            session.destroy()
        }
        XCTAssertEqual(openDescriptors(), before)
    }

    func testDestroyDropsEverythingButTheRoot() throws {
        writeHostFile("a", "x")
        let node = try fs.lookup(root, parent: rootNodeID, name: name("a")).nodeID
        _ = try fs.open(root, node: node, flags: UInt32(O_RDONLY), killSuidGid: false)
        fs.destroy()
        XCTAssertEqual(fs.inodes.count, 1)
        XCTAssertEqual(fs.handles.withLock { $0.files.count }, 0)
        XCTAssertEqual(fs.descriptorCount.value.load(ordering: .relaxed), 1)
        XCTAssertNoThrow(try fs.lookup(root, parent: rootNodeID, name: name("a")))
    }

    func testCreationAsAnotherUserIsDeniedWhereTheKernelDeniesIt() throws {
        // The shared root is 0755 root:root: uid 1000 may not create in it.
        assertErrno(.accessDenied) {
            try fs.mkdir(user, parent: rootNodeID, name: name("nope"), mode: 0o755, extras: CreateExtras())
        }
        assertErrno(.accessDenied) {
            try fs.create(user, parent: rootNodeID, name: name("nope"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR), extras: CreateExtras())
        }
        writeHostFile("secret", "x")
        chmod(hostPath("secret"), 0o600)
        let node = try fs.lookup(root, parent: rootNodeID, name: name("secret")).nodeID
        assertErrno(.accessDenied) { try fs.access(user, node: node, mask: UInt32(R_OK)) }
        XCTAssertNoThrow(try fs.access(root, node: node, mask: UInt32(R_OK | W_OK)))
        assertErrno(.accessDenied) { try fs.access(root, node: node, mask: UInt32(X_OK)) }
        XCTAssertEqual(geteuid(), 0)
    }

    func testTmpfileIsOpenAndUnnamed() throws {
        let (entry, opened) = try fs.tmpfile(root, parent: rootNodeID, mode: S_IFREG | 0o600, flags: UInt32(O_RDWR), extras: CreateExtras())
        XCTAssertEqual(entry.attributes.st_nlink, 0)
        _ = try write(entry.nodeID, opened.handle, "temp")
        XCTAssertEqual(try read(entry.nodeID, opened.handle), "temp")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), [])
    }

    func testStatfs() throws {
        let st = try fs.statfs(root, node: rootNodeID)
        XCTAssertGreaterThan(st.f_bsize, 0)
        XCTAssertGreaterThan(st.f_blocks, 0)
    }

    func testReadonlyRefusesEveryModification() throws {
        writeHostFile("r", "data")
        fs = try makeFileSystem { $0.readOnly = true }
        let node = try fs.lookup(root, parent: rootNodeID, name: name("r")).nodeID
        assertErrno(.readOnlyFileSystem) { try fs.mkdir(root, parent: rootNodeID, name: name("d"), mode: 0o755, extras: CreateExtras()) }
        assertErrno(.readOnlyFileSystem) {
            try fs.create(root, parent: rootNodeID, name: name("c"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR), extras: CreateExtras())
        }
        assertErrno(.readOnlyFileSystem) { try fs.unlink(root, parent: rootNodeID, name: name("r")) }
        assertErrno(.readOnlyFileSystem) { try fs.open(root, node: node, flags: UInt32(O_WRONLY), killSuidGid: false) }
        assertErrno(.readOnlyFileSystem) { try fs.open(root, node: node, flags: UInt32(O_RDONLY | O_TRUNC), killSuidGid: false) }
        assertErrno(.readOnlyFileSystem) { try fs.setattr(root, node: node, SetAttributes(valid: .mode)) }
        assertErrno(.readOnlyFileSystem) {
            try fs.rename(root, parent: rootNodeID, name: name("r"), newParent: rootNodeID, newName: name("s"), flags: 0)
        }
        assertErrno(.readOnlyFileSystem) {
            try fs.setxattr(root, node: node, name: name("user.x"), value: UnsafeRawBufferPointer(start: nil, count: 0), flags: 0, extFlags: 0)
        }
        assertErrno(.readOnlyFileSystem) { try fs.access(root, node: node, mask: UInt32(W_OK)) }
        let handle = try fs.open(root, node: node, flags: UInt32(O_RDONLY), killSuidGid: false).handle
        XCTAssertEqual(try read(node, handle), "data")
        assertErrno(.readOnlyFileSystem) { _ = try write(node, handle, "x") }
        assertErrno(.readOnlyFileSystem) { try fs.fallocate(root, node: node, handle: handle, mode: 0, offset: 0, length: 10) }
        XCTAssertEqual(try String(contentsOfFile: hostPath("r"), encoding: .utf8), "data")
    }

    func testInitializeOffersOnlyWhatTheOptionsAllowAndTheKernelOffers() throws {
        fs = try makeFileSystem { $0.posixLocks = false; $0.flock = true; $0.writeback = true; $0.cache = .never }
        let all = try fs.initialize(capable: InitFlags(rawValue: UInt64.max))
        XCTAssertFalse(all.contains(.posixLocks))
        XCTAssertTrue(all.contains(.flockLocks))
        XCTAssertTrue(all.contains(.writebackCache))
        XCTAssertFalse(all.contains(.doReaddirplus), "cache=never turns readdirplus off unless asked for")
        XCTAssertFalse(all.contains(.cacheSymlinks), "cache=never does not cache symlinks")
        XCTAssertFalse(all.contains(.posixACL))
        let some = try fs.initialize(capable: [.flockLocks])
        XCTAssertEqual(some, [.flockLocks])
    }

    func testCacheModesSetTimeoutsAndOpenFlags() throws {
        writeHostFile("c", "x")
        for (mode, seconds, flags) in [(CacheMode.never, UInt64(0), OpenReplyFlags.directIO), (.metadata, 86400, .directIO),
                                       (.auto, 1, []), (.always, 86400, .keepCache)] {
            fs = try makeFileSystem { $0.cache = mode }
            let entry = try fs.lookup(root, parent: rootNodeID, name: name("c"))
            XCTAssertEqual(entry.entryTimeout.seconds, seconds, "\(mode)")
            XCTAssertEqual(entry.attributesTimeout.seconds, seconds, "\(mode)")
            XCTAssertEqual(try fs.open(root, node: entry.nodeID, flags: UInt32(O_RDONLY), killSuidGid: false).flags, flags, "\(mode)")
        }
        XCTAssertTrue(try fs.opendir(root, node: rootNodeID, flags: 0).flags.contains(.cacheDirectory))
        fs = try makeFileSystem { $0.cache = .always; $0.timeout = 2.5 }
        let entry = try fs.lookup(root, parent: rootNodeID, name: name("c"))
        XCTAssertEqual(entry.entryTimeout, Timeout(seconds: 2, nanoseconds: 500_000_000))
        XCTAssertEqual(CacheMode(option: "none"), .never)
        XCTAssertEqual(CacheMode(option: "metadata"), .metadata)
        XCTAssertNil(CacheMode(option: "sometimes"))
    }

    func testWritebackOpensWriteOnlyFilesForReading() throws {
        writeHostFile("wb", "abc")
        fs = try makeFileSystem { $0.writeback = true }
        let node = try fs.lookup(root, parent: rootNodeID, name: name("wb")).nodeID
        let handle = try fs.open(root, node: node, flags: UInt32(O_WRONLY | O_APPEND), killSuidGid: false).handle
        XCTAssertEqual(try read(node, handle), "abc", "write-only became read-write")
        _ = try write(node, handle, "X", at: 0)
        XCTAssertEqual(try String(contentsOfFile: hostPath("wb"), encoding: .utf8), "Xbc", "O_APPEND was dropped: the offset is honoured")
    }
}
