import XCTest
import Foundation
import Glibc
import CVirtioFS
import FUSE
import Posix
@testable import Passthrough

/// The migration state format: round trips, and every corruption refused.
final class MigrationFormatTests: XCTestCase {
    func sample() -> MigrationState {
        var s = MigrationState()
        s.fuseMinor = 38
        s.fuseFlags = 0x1234_5678_9abc
        s.filesystemFlags = 0x42
        s.mode = .findPaths
        s.nextNodeID = 10
        s.nextHandleID = 5
        s.inodes = [
            .init(id: 1, lookups: 3, fileType: UInt32(Glibc.S_IFDIR), inodeNumber: 2, location: .path([])),
            .init(id: 2, lookups: 1, fileType: UInt32(Glibc.S_IFREG), inodeNumber: 77, location: .path(Array("dir/file".utf8))),
            .init(id: 7, lookups: 9, fileType: UInt32(Glibc.S_IFDIR), inodeNumber: 78, location: .path(Array("dir".utf8))),
            .init(id: 8, lookups: 1, fileType: UInt32(Glibc.S_IFREG), inodeNumber: 79, location: .lost(Array("deleted on the host".utf8))),
            .init(id: 9, lookups: 2, fileType: UInt32(Glibc.S_IFLNK), inodeNumber: 80,
                  location: .fileHandle([8, 0, 0, 0, 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])),
        ]
        s.handles = [.init(id: 1, node: 2, flags: UInt32(O_RDWR | O_APPEND)), .init(id: 4, node: 7, flags: UInt32(O_RDONLY))]
        return s
    }

    func testRoundTrip() throws {
        let s = sample()
        XCTAssertEqual(try MigrationCodec.decode(MigrationCodec.encode(s)), s)
        var handles = s
        handles.mode = .fileHandles
        XCTAssertEqual(try MigrationCodec.decode(MigrationCodec.encode(handles)), handles)
    }

    func testEveryTruncationIsRefused() {
        let bytes = MigrationCodec.encode(sample())
        for n in 0..<bytes.count {
            XCTAssertThrowsError(try MigrationCodec.decode(Array(bytes[0..<n])), "\(n) of \(bytes.count) bytes")
        }
    }

    func testEveryChangedByteIsRefused() {
        let bytes = MigrationCodec.encode(sample())
        for i in bytes.indices {
            for flip: UInt8 in [0x01, 0x80, 0xff] {
                var bad = bytes
                bad[i] ^= flip
                XCTAssertThrowsError(try MigrationCodec.decode(bad), "byte \(i) ^ \(flip)")
            }
        }
        XCTAssertThrowsError(try MigrationCodec.decode(bytes + [0]), "a trailing byte")
    }

    /// State with a valid checksum but contents a destination must not act on.
    func testHostileButWellFormedStateIsRefused() {
        func refused(_ why: String, _ change: (inout MigrationState) -> Void, file: StaticString = #filePath, line: UInt = #line) {
            var s = sample()
            change(&s)
            XCTAssertThrowsError(try MigrationCodec.decode(MigrationCodec.encode(s)), why, file: file, line: line) { error in
                guard case .bad = error as? MigrationFormatError else {
                    return XCTFail("\(why): \(error)", file: file, line: line)
                }
            }
        }
        refused("absolute path") { $0.inodes[1].location = .path(Array("/etc/shadow".utf8)) }
        refused("dot-dot") { $0.inodes[1].location = .path(Array("dir/../../etc".utf8)) }
        refused("dot") { $0.inodes[1].location = .path(Array("./x".utf8)) }
        refused("empty component") { $0.inodes[1].location = .path(Array("dir//x".utf8)) }
        refused("trailing slash") { $0.inodes[1].location = .path(Array("dir/".utf8)) }
        refused("NUL in a path") { $0.inodes[1].location = .path([0x61, 0, 0x62]) }
        refused("empty path not the root") { $0.inodes[1].location = .path([]) }
        refused("too long a path") { $0.inodes[1].location = .path([UInt8](repeating: 0x61, count: Int(PATH_MAX) + 1)) }
        refused("handle header disagrees") { $0.inodes[4].location = .fileHandle([9, 0, 0, 0, 1, 0, 0, 0, 1]) }
        refused("handle too long") { $0.inodes[4].location = .fileHandle([200, 0, 0, 0] + [UInt8](repeating: 0, count: 204)) }
        refused("handle too short") { $0.inodes[4].location = .fileHandle([0, 0, 0]) }
        refused("duplicate inode") { $0.inodes[2].id = 2 }
        refused("inode id 0") { $0.inodes[2].id = 0 }
        refused("inode id beyond next") { $0.inodes[2].id = 10 }
        refused("no root") { $0.inodes.removeFirst() }
        refused("unknown file type") { $0.inodes[1].fileType = 0o170000 & ~UInt32(Glibc.S_IFMT) | 0o030000 }
        refused("handle to unknown inode") { $0.handles[0].node = 5 }
        refused("duplicate handle") { $0.handles[1].id = 1 }
        refused("handle id 0") { $0.handles[1].id = 0 }
        refused("handle id beyond next") { $0.handles[1].id = 5 }
    }

    func testHeaderErrorsSayWhatIsWrong() {
        var bytes = MigrationCodec.encode(sample())
        var v2 = bytes
        v2[8] = 2
        XCTAssertEqual(Self.error(v2), .unsupportedVersion(2))
        bytes[0] = UInt8(ascii: "X")
        XCTAssertEqual(Self.error(bytes), .notMigrationState)
        var sum = MigrationCodec.encode(sample())
        sum[sum.count - 20] ^= 1
        XCTAssertEqual(Self.error(sum), .checksum)
        // A count that promises more records than there are bytes is refused before any allocation.
        var huge = MigrationCodec.encode(MigrationState())
        huge.replaceSubrange(64..<68, with: [0xff, 0xff, 0xff, 0x7f])
        let body = huge.count - MigrationCodec.headerSize - 8
        _ = body
        huge.replaceSubrange((huge.count - 8)..., with: withUnsafeBytes(of: MigrationCodec.fnv1a(huge[0..<(huge.count - 8)]).littleEndian) { Array($0) })
        guard case .bad(let why) = Self.error(huge) else { return XCTFail("huge count accepted") }
        XCTAssertTrue(why.contains("cannot fit"), why)
    }

    static func error(_ bytes: [UInt8]) -> MigrationFormatError? {
        do { _ = try MigrationCodec.decode(bytes) } catch { return error }
        return nil
    }
}

/// A state saved from one filesystem restores into a fresh one over the same tree.
final class MigrationRestoreTests: PassthroughTestCase {
    func migrate(_ adjust: (inout PassthroughConfiguration) -> Void = { _ in }) throws -> PassthroughFileSystem {
        let state = fs.exportMigrationState()
        let bytes = MigrationCodec.encode(state)
        let destination = try makeFileSystem(adjust)
        try destination.importMigrationState(try MigrationCodec.decode(bytes))
        return destination
    }

    func openHandle(_ node: NodeID, _ flags: Int32) throws -> HandleID {
        try fs.open(root, node: node, flags: UInt32(flags), killSuidGid: false).handle
    }

    func testInodesAndHandlesKeepTheirIdsAndWork() throws {
        try FileManager.default.createDirectory(atPath: hostPath("dir/sub"), withIntermediateDirectories: true)
        writeHostFile("dir/sub/file", "hello")
        let dir = try fs.lookup(root, parent: rootNodeID, name: name("dir"))
        let sub = try fs.lookup(root, parent: dir.nodeID, name: name("sub"))
        let file = try fs.lookup(root, parent: sub.nodeID, name: name("file"))
        _ = try fs.lookup(root, parent: sub.nodeID, name: name("file"))
        let handle = try openHandle(file.nodeID, O_RDWR | O_APPEND)
        let dirHandle = try fs.opendir(root, node: sub.nodeID, flags: 0).handle

        let destination = try migrate()
        fs = destination
        XCTAssertEqual(lookupCount(file.nodeID), 2, "lookup counts travel")
        XCTAssertEqual(try fs.getattr(root, node: file.nodeID, handle: nil).attributes.st_ino, file.attributes.st_ino)
        XCTAssertEqual(try read(file.nodeID, handle), "hello", "the open handle reads")
        XCTAssertEqual(try write(file.nodeID, handle, " world"), 6)
        XCTAssertEqual(try String(contentsOfFile: hostPath("dir/sub/file"), encoding: .utf8), "hello world", "O_APPEND kept")
        XCTAssertEqual(try fs.lookup(root, parent: sub.nodeID, name: name("file")).nodeID, file.nodeID,
                       "a directory node resolves names, and a restored file is found again under its id (same shard)")
        var entries = CollectingSink(capacity: 4096)
        try fs.readdir(root, node: sub.nodeID, handle: dirHandle, offset: 0, plus: false, into: &entries)
        XCTAssertTrue(entries.names.contains("file"), "the directory handle lists")
        // New ids continue after the migrated ones.
        writeHostFile("other", "x")
        XCTAssertGreaterThan(try fs.lookup(root, parent: rootNodeID, name: name("other")).nodeID, file.nodeID)
        let fresh = try openHandle(file.nodeID, O_RDONLY)
        XCTAssertGreaterThan(fresh, max(handle, dirHandle))
    }

    func testRenameBeforeTheSaveIsFollowedAndAfterItFileHandlesStillWork() throws {
        writeHostFile("a", "contents")
        let a = try fs.lookup(root, parent: rootNodeID, name: name("a"))
        let handle = try openHandle(a.nodeID, O_RDONLY)
        // find-paths: the path is looked up when the state is saved, so a rename before it is fine.
        XCTAssertEqual(rename(hostPath("a"), hostPath("b")), 0)
        let moved = try migrate()
        XCTAssertEqual(try moved.getattr(root, node: a.nodeID, handle: nil).attributes.st_ino, a.attributes.st_ino)
        // file-handles: a rename after the save does not matter either.
        let source = try makeFileSystem { $0.migration.mode = .fileHandles }
        fs = source
        let b = try fs.lookup(root, parent: rootNodeID, name: name("b"))
        let h2 = try openHandle(b.nodeID, O_RDONLY)
        let bytes = MigrationCodec.encode(fs.exportMigrationState())
        XCTAssertEqual(rename(hostPath("b"), hostPath("c")), 0)
        let destination = try makeFileSystem { $0.migration.verifyHandles = true }
        try destination.importMigrationState(try MigrationCodec.decode(bytes))
        fs = destination
        XCTAssertEqual(try read(b.nodeID, h2), "contents")
        _ = handle
    }

    func testAFileGoneBeforeTheSaveAbortsOrAnswersErrors() throws {
        writeHostFile("gone", "x")
        let gone = try fs.lookup(root, parent: rootNodeID, name: name("gone"))
        let handle = try openHandle(gone.nodeID, O_RDONLY)
        XCTAssertEqual(unlink(hostPath("gone")), 0)
        let state = fs.exportMigrationState()
        guard case .lost = state.inodes.first(where: { $0.id == gone.nodeID })?.location else {
            return XCTFail("a deleted file is recorded as lost")
        }
        let strict = try makeFileSystem()
        XCTAssertThrowsError(try strict.importMigrationState(state), "abort: the load fails")
        XCTAssertThrowsError(try strict.getattr(root, node: gone.nodeID, handle: nil), "and nothing was entered")
        let lenient = try makeFileSystem { $0.migration.onError = .guestError }
        try lenient.importMigrationState(state)
        fs = lenient
        XCTAssertThrowsError(try fs.getattr(root, node: gone.nodeID, handle: nil), "guest-error: the inode answers errors")
        XCTAssertThrowsError(try read(gone.nodeID, handle))
        XCTAssertNoThrow(try fs.getattr(root, node: rootNodeID, handle: nil), "the rest works")
    }

    func testConfirmPathsAcceptsAPathThatStillLeadsToTheFile() throws {
        writeHostFile("f", "1")
        let f = try fs.lookup(root, parent: rootNodeID, name: name("f"))
        let confirming = try makeFileSystem { $0.migration.confirmPaths = true }
        fs = confirming
        let g = try fs.lookup(root, parent: rootNodeID, name: name("f"))
        guard case .path = fs.exportMigrationState().inodes.first(where: { $0.id == g.nodeID })?.location else {
            return XCTFail("an unchanged path is confirmed")
        }
        _ = f
    }

    func testALoadIntoADaemonThatServedRequestsIsRefused() throws {
        writeHostFile("f", "1")
        let state = fs.exportMigrationState()
        let busy = try makeFileSystem()
        _ = try busy.lookup(root, parent: rootNodeID, name: name("f"))
        XCTAssertThrowsError(try busy.importMigrationState(state))
    }

    func testAPathThroughASymlinkIsNotFollowed() throws {
        try FileManager.default.createDirectory(atPath: hostPath("real"), withIntermediateDirectories: true)
        writeHostFile("real/f", "1")
        XCTAssertEqual(symlink("/", hostPath("link")), 0)
        var state = MigrationState()
        state.nextNodeID = 3
        state.inodes = [.init(id: 1, lookups: 1, fileType: UInt32(Glibc.S_IFDIR), inodeNumber: 0, location: .path([])),
                        .init(id: 2, lookups: 1, fileType: UInt32(Glibc.S_IFREG), inodeNumber: 0, location: .path(Array("link/etc/passwd".utf8)))]
        let destination = try makeFileSystem()
        XCTAssertThrowsError(try destination.importMigrationState(try MigrationCodec.decode(MigrationCodec.encode(state))))
        state.inodes[1].location = .path(Array("real/f".utf8))
        let ok = try makeFileSystem()
        XCTAssertNoThrow(try ok.importMigrationState(try MigrationCodec.decode(MigrationCodec.encode(state))))
    }
}

/// A file handle in a state is only honoured for a directory inside the share.
final class MigrationHandleContainmentTests: PassthroughTestCase {
    func testAHandleToADirectoryOutsideTheShareIsRefused() throws {
        var template = Array("/tmp/migration-outside-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw XCTSkip("mkdtemp") }
        let outside = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: outside) }
        try FileManager.default.createDirectory(atPath: hostPath("inside"), withIntermediateDirectories: true)
        let source = try makeFileSystem { $0.migration.mode = .fileHandles }
        func handle(of path: String) throws -> [UInt8] {
            let fd = open(path, CVFS_O_PATH | O_DIRECTORY)
            guard fd >= 0 else { throw Errno.current }
            defer { close(fd) }
            return try source.fileHandle(fd)
        }
        guard let outsideHandle = try? handle(of: outside), let insideHandle = try? handle(of: hostPath("inside")) else {
            throw XCTSkip("no file handles on this filesystem")
        }
        var state = MigrationState()
        state.mode = .fileHandles
        state.nextNodeID = 3
        state.inodes = [.init(id: 1, lookups: 1, fileType: UInt32(Glibc.S_IFDIR), inodeNumber: 0, location: .path([])),
                        .init(id: 2, lookups: 1, fileType: UInt32(Glibc.S_IFDIR), inodeNumber: 0, location: .fileHandle(outsideHandle))]
        let destination = try makeFileSystem()
        XCTAssertThrowsError(try destination.importMigrationState(state), "a directory outside the share")
        state.inodes[1].location = .fileHandle(insideHandle)
        let ok = try makeFileSystem()
        XCTAssertNoThrow(try ok.importMigrationState(state))
    }
}
