import XCTest
import Foundation
import Glibc
import CVirtioFS
import FUSE
import Posix
import Options
@testable import Passthrough

final class DirectoryAndDataTests: PassthroughTestCase {
    func testReaddirOfThousandsOfEntriesListsEachNameOnceAndResumes() throws {
        let count = 3000
        for i in 0..<count { close(open(hostPath("entry-\(i)"), O_CREAT | O_WRONLY, 0o644)) }
        let listing = try listDirectory(rootNodeID, capacity: 2048)
        var expected = Set((0..<count).map { "entry-\($0)" })
        expected.insert(".")
        expected.insert("..")
        XCTAssertEqual(listing.names.count, expected.count, "each name exactly once")
        XCTAssertEqual(Set(listing.names), expected)
        // Resuming from any entry's offset continues right after it.
        let handle = try fs.opendir(root, node: rootNodeID, flags: 0).handle
        let middle = 1234
        var page = CollectingSink(capacity: 1024)
        try fs.readdir(root, node: rootNodeID, handle: handle, offset: listing.offsets[middle], plus: false, into: &page)
        XCTAssertEqual(page.names.first, listing.names[middle + 1])
    }

    func testReaddirOffsetsSurviveConcurrentUnlinks() throws {
        for i in 0..<500 { close(open(hostPath("u-\(i)"), O_CREAT | O_WRONLY, 0o644)) }
        let handle = try fs.opendir(root, node: rootNodeID, flags: 0).handle
        var first = CollectingSink(capacity: 2048)
        try fs.readdir(root, node: rootNodeID, handle: handle, offset: 0, plus: false, into: &first)
        // Remove everything already listed, then continue: nothing is repeated.
        for n in first.names where n.hasPrefix("u-") { unlink(hostPath(n)) }
        var seen = Set(first.names)
        var offset = first.offsets.last!
        while true {
            var page = CollectingSink(capacity: 2048)
            try fs.readdir(root, node: rootNodeID, handle: handle, offset: offset, plus: false, into: &page)
            if page.names.isEmpty { break }
            for n in page.names { XCTAssertTrue(seen.insert(n).inserted, "\(n) listed twice") }
            offset = page.offsets.last!
        }
        XCTAssertEqual(seen.count, 502)
    }

    func testReaddirplusTakesOneLookupPerEntryButNotForDots() throws {
        for i in 0..<40 { writeHostFile("p\(i)", "x") }
        let listing = try listDirectory(rootNodeID, plus: true, capacity: 1500)
        XCTAssertEqual(listing.names.count, 42)
        for (n, entry) in zip(listing.names, listing.entries) {
            if n == "." || n == ".." {
                XCTAssertNil(entry, "dots are passed without lookup")
                continue
            }
            guard let entry else { XCTFail("no entry for \(n)"); continue }
            XCTAssertEqual(lookupCount(entry.nodeID), 1, "\(n): exactly one lookup, even across pages")
        }
        XCTAssertEqual(lookupCount(rootNodeID), 1, "no lookup taken on the root for '.' or '..'")
        // Entries that did not fit were not counted: the table holds exactly root + 40 nodes.
        XCTAssertEqual(fs.inodes.count, 41)
    }

    func testReaddirOnAFileHandleIsRefused() throws {
        writeHostFile("f", "x")
        let node = try fs.lookup(root, parent: rootNodeID, name: name("f")).nodeID
        assertErrno(.notDirectory) { try fs.opendir(root, node: node, flags: 0) }
        // A READDIR that names a regular file's OPEN handle is refused too.
        let fileHandle = try fs.open(root, node: node, flags: UInt32(O_RDONLY), killSuidGid: false).handle
        var sink = CollectingSink(capacity: 4096)
        assertErrno(.notDirectory) { try fs.readdir(root, node: node, handle: fileHandle, offset: 0, plus: false, into: &sink) }
    }

    func testCopyFileRange() throws {
        writeHostFile("src", "0123456789")
        writeHostFile("dst", "")
        let src = try fs.lookup(root, parent: rootNodeID, name: name("src")).nodeID
        let dst = try fs.lookup(root, parent: rootNodeID, name: name("dst")).nodeID
        let h1 = try fs.open(root, node: src, flags: UInt32(O_RDONLY), killSuidGid: false).handle
        let h2 = try fs.open(root, node: dst, flags: UInt32(O_RDWR), killSuidGid: false).handle
        let copied = try fs.copyFileRange(root, nodeIn: src, handleIn: h1, offsetIn: 2, nodeOut: dst, handleOut: h2, offsetOut: 0, length: 5, flags: 0)
        XCTAssertEqual(copied, 5)
        XCTAssertEqual(try String(contentsOfFile: hostPath("dst"), encoding: .utf8), "23456")
    }

    func testSeekDataAndHoleAndPunchHole() throws {
        let (entry, opened) = try fs.create(root, parent: rootNodeID, name: name("sparse"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR), extras: CreateExtras())
        let block = 1 << 20
        _ = try write(entry.nodeID, opened.handle, String(repeating: "a", count: block), at: UInt64(4 * block))
        let data = try fs.lseek(root, node: entry.nodeID, handle: opened.handle, offset: 0, whence: UInt32(CVFS_SEEK_DATA))
        XCTAssertEqual(data, UInt64(4 * block))
        let hole = try fs.lseek(root, node: entry.nodeID, handle: opened.handle, offset: 0, whence: UInt32(CVFS_SEEK_HOLE))
        XCTAssertEqual(hole, 0)
        // Punch the data out: the file keeps its size and reads back zeros.
        try fs.fallocate(root, node: entry.nodeID, handle: opened.handle,
                         mode: UInt32(CVFS_FALLOC_FL_PUNCH_HOLE | CVFS_FALLOC_FL_KEEP_SIZE),
                         offset: UInt64(4 * block), length: UInt64(block))
        XCTAssertEqual(hostStat("sparse").st_size, off_t(5 * block))
        assertErrno(Errno(ENXIO)) { try fs.lseek(root, node: entry.nodeID, handle: opened.handle, offset: 0, whence: UInt32(CVFS_SEEK_DATA)) }
        XCTAssertEqual(try read(entry.nodeID, opened.handle, at: UInt64(4 * block), size: 4), "\0\0\0\0")
        // Plain allocation grows the file.
        try fs.fallocate(root, node: entry.nodeID, handle: opened.handle, mode: 0, offset: 0, length: UInt64(6 * block))
        XCTAssertEqual(hostStat("sparse").st_size, off_t(6 * block))
    }

    func testFsyncAndSyncfs() throws {
        let (entry, opened) = try fs.create(root, parent: rootNodeID, name: name("s"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR), extras: CreateExtras())
        XCTAssertNoThrow(try fs.fsync(root, node: entry.nodeID, handle: opened.handle, datasync: false))
        XCTAssertNoThrow(try fs.fsync(root, node: entry.nodeID, handle: opened.handle, datasync: true))
        XCTAssertNoThrow(try fs.syncfs(root, node: rootNodeID))
        let dir = try fs.opendir(root, node: rootNodeID, flags: 0).handle
        XCTAssertNoThrow(try fs.fsyncdir(root, node: rootNodeID, handle: dir, datasync: false))
    }

    func testPosixLocksConflictBetweenHandlesAndReleaseDropsThem() throws {
        writeHostFile("lock", "0123456789")
        let node = try fs.lookup(root, parent: rootNodeID, name: name("lock")).nodeID
        let a = try fs.open(root, node: node, flags: UInt32(O_RDWR), killSuidGid: false).handle
        let b = try fs.open(root, node: node, flags: UInt32(O_RDWR), killSuidGid: false).handle
        let write = FileLock(start: 0, end: 4, type: F_WRLCK, pid: 10)
        try fs.setlk(root, node: node, handle: a, owner: 1, lock: write, wait: false, flock: false)
        let conflict = try fs.getlk(root, node: node, handle: b, owner: 2, lock: FileLock(start: 2, end: 8, type: F_RDLCK, pid: 20))
        XCTAssertEqual(conflict.type, F_WRLCK)
        XCTAssertEqual(conflict.start, 0)
        XCTAssertEqual(conflict.end, 4)
        let free = try fs.getlk(root, node: node, handle: b, owner: 2, lock: FileLock(start: 5, end: UInt64.max, type: F_WRLCK, pid: 20))
        XCTAssertEqual(free.type, F_UNLCK)
        assertErrno(.wouldBlock) { try fs.setlk(root, node: node, handle: b, owner: 2, lock: write, wait: false, flock: false) }
        // A parked waiter gets the lock once the holder's handle is released.
        let late = RecordedLateReply()
        let ctx = RequestContext(unique: 50, uid: 0, gid: 0, pid: 1)
        XCTAssertEqual(try fs.setlkw(ctx, node: node, handle: b, owner: 2, lock: write, flock: false) {
            LockWaitCompletion(unique: 50, reply: late)
        }, .parked)
        try fs.release(RequestContext(), node: node, handle: a, flags: 0, lockOwner: 1, flush: false, flockRelease: false)
        XCTAssertEqual(late.error(), 0)
        // Locks can be switched off.
        fs = try makeFileSystem { $0.posixLocks = false; $0.flock = false }
        let n2 = try fs.lookup(root, parent: rootNodeID, name: name("lock")).nodeID
        let h = try fs.open(root, node: n2, flags: UInt32(O_RDWR), killSuidGid: false).handle
        assertErrno(.noSys) { try fs.setlk(root, node: n2, handle: h, owner: 1, lock: write, wait: false, flock: false) }
        assertErrno(.noSys) { try fs.getlk(root, node: n2, handle: h, owner: 1, lock: write) }
        assertErrno(.noSys) { try fs.setlk(root, node: n2, handle: h, owner: 1, lock: write, wait: false, flock: true) }
    }

    func testConcurrentReadsWritesAndForgetsDoNotTrip() throws {
        writeHostFile("shared", String(repeating: "s", count: 4096))
        let fs = self.fs!
        let ctx = RequestContext()
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            let p = strdup("shared")!
            defer { free(p) }
            let n = FileName(cString: p, count: 6)
            for _ in 0..<100 {
                guard let e = try? fs.lookup(ctx, parent: rootNodeID, name: n),
                      let h = try? fs.open(ctx, node: e.nodeID, flags: UInt32(O_RDWR), killSuidGid: false).handle else {
                    XCTFail("lookup/open failed")
                    return
                }
                var reader = MemoryReader(Array(repeating: UInt8(65 + worker), count: 16))
                _ = try? fs.write(ctx, node: e.nodeID, handle: h, offset: UInt64(worker * 16), size: 16, flags: 0, killSuidGid: false, from: &reader)
                var writer = MemoryWriter(capacity: 64)
                _ = try? fs.read(ctx, node: e.nodeID, handle: h, offset: 0, size: 64, into: &writer)
                try? fs.release(ctx, node: e.nodeID, handle: h, flags: 0, lockOwner: nil, flush: false, flockRelease: false)
                fs.forget(e.nodeID, count: 1)
            }
        }
        XCTAssertEqual(fs.inodes.count, 1)
        XCTAssertEqual(fs.handles.withLock { $0.files.count }, 0)
        let contents = try String(contentsOfFile: hostPath("shared"), encoding: .utf8)
        for worker in 0..<8 {
            let start = contents.index(contents.startIndex, offsetBy: worker * 16)
            XCTAssertEqual(String(contents[start..<contents.index(start, offsetBy: 16)]), String(repeating: Character(UnicodeScalar(UInt8(65 + worker))), count: 16))
        }
    }

    func testFlockExcludesOtherHandles() throws {
        writeHostFile("fl", "x")
        let node = try fs.lookup(root, parent: rootNodeID, name: name("fl")).nodeID
        let a = try fs.open(root, node: node, flags: UInt32(O_RDONLY), killSuidGid: false).handle
        let b = try fs.open(root, node: node, flags: UInt32(O_RDONLY), killSuidGid: false).handle
        let exclusive = FileLock(start: 0, end: 0, type: F_WRLCK, pid: 1)
        try fs.setlk(root, node: node, handle: a, owner: 1, lock: exclusive, wait: false, flock: true)
        assertErrno(.wouldBlock) { try fs.setlk(root, node: node, handle: b, owner: 2, lock: exclusive, wait: false, flock: true) }
        try fs.setlk(root, node: node, handle: a, owner: 1, lock: FileLock(start: 0, end: 0, type: F_UNLCK, pid: 1), wait: false, flock: true)
        XCTAssertNoThrow(try fs.setlk(root, node: node, handle: b, owner: 2, lock: exclusive, wait: false, flock: true))
    }
}
