import XCTest
import Foundation
import Glibc
import FUSE
import Posix
import Options
@testable import Passthrough

/// Requests a hostile guest can send that the kernel's own FUSE client never would.
final class HostileRequestTests: PassthroughTestCase {
    /// Runs `body` on another thread; fails (and calls `unblock`) if it has not returned after `seconds`.
    func assertReturns(within seconds: Double, unblock: () -> Void, _ body: @escaping @Sendable () -> Void,
                       file: StaticString = #filePath, line: UInt = #line) {
        let finished = expectation(description: "returned")
        Thread { body(); finished.fulfill() }.start()
        if XCTWaiter.wait(for: [finished], timeout: seconds) != .completed {
            XCTFail("the request blocked its thread", file: file, line: line)
            unblock()
            wait(for: [finished], timeout: 10)
        }
    }

    func testCreateOnAnExistingFIFODoesNotBlockAndOpensNothing() throws {
        XCTAssertEqual(mkfifo(hostPath("fifo"), 0o666), 0)
        let fs = self.fs!, root = self.root, fifo = name("fifo")
        let outcome = ManagedAtomicBox()
        // Without O_EXCL, open(2) of a FIFO for reading waits for a writer: the queue thread would hang.
        assertReturns(within: 3, unblock: {
            let writer = open(hostPath("fifo"), O_WRONLY | O_NONBLOCK)
            if writer >= 0 { close(writer) }
        }) {
            do {
                _ = try fs.create(root, parent: rootNodeID, name: fifo, mode: S_IFREG | 0o644,
                                  flags: UInt32(O_RDONLY), extras: CreateExtras())
                outcome.set("opened")
            } catch {
                outcome.set("\(error)")
            }
        }
        XCTAssertNotEqual(outcome.get(), "opened", "CREATE must not hand out a handle to a FIFO")
    }

    func testCreateOnAnExistingDeviceNodeDoesNotOpenTheDevice() throws {
        // A guest may MKNOD a device node; CREATE without O_EXCL must not then open the host device.
        XCTAssertEqual(mknod(hostPath("null"), S_IFCHR | 0o666, dev_t(1 << 8 | 3)), 0)
        assertErrno(.permissionDenied) {
            try fs.create(root, parent: rootNodeID, name: name("null"), mode: S_IFREG | 0o644,
                          flags: UInt32(O_RDWR), extras: CreateExtras())
        }
        // Nothing was left behind in the tables: no handle, no extra lookup.
        XCTAssertEqual(fs.handles.withLock { $0.files.count }, 0)
    }

    func testCreateOnAnExistingRegularFileStillOpensIt() throws {
        writeHostFile("f", "contents")
        let (entry, opened) = try fs.create(root, parent: rootNodeID, name: name("f"), mode: S_IFREG | 0o644,
                                            flags: UInt32(O_RDWR), extras: CreateExtras())
        XCTAssertEqual(try read(entry.nodeID, opened.handle), "contents")
        XCTAssertEqual(lookupCount(entry.nodeID), 1)
        let truncated = try fs.create(root, parent: rootNodeID, name: name("f"), mode: S_IFREG | 0o644,
                                      flags: UInt32(O_RDWR | O_TRUNC), extras: CreateExtras())
        XCTAssertEqual(truncated.0.nodeID, entry.nodeID)
        XCTAssertEqual(lookupCount(entry.nodeID), 2)
        XCTAssertEqual(hostStat("f").st_size, 0)
        // A symlink is still never followed.
        XCTAssertEqual(symlink("/etc/passwd", hostPath("link")), 0)
        assertErrno(.loop) {
            try fs.create(root, parent: rootNodeID, name: name("link"), mode: S_IFREG | 0o644,
                          flags: UInt32(O_RDWR), extras: CreateExtras())
        }
    }

    func testFailingRequestsLeaveNoDescriptorOrLookupBehind() throws {
        func openDescriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }
        XCTAssertEqual(mkfifo(hostPath("fifo"), 0o666), 0)
        XCTAssertEqual(mknod(hostPath("null"), S_IFCHR | 0o666, dev_t(1 << 8 | 3)), 0)
        XCTAssertEqual(symlink("/etc", hostPath("link")), 0)
        XCTAssertEqual(mkdir(hostPath("dir"), 0o755), 0)
        writeHostFile("file", "x")
        let fifo = try fs.lookup(root, parent: rootNodeID, name: name("fifo")).nodeID
        let link = try fs.lookup(root, parent: rootNodeID, name: name("link")).nodeID
        let file = try fs.lookup(root, parent: rootNodeID, name: name("file")).nodeID
        let fileHandle = try fs.open(root, node: file, flags: UInt32(O_RDONLY), killSuidGid: false).handle
        let nodesBefore = fs.inodes.count
        let before = openDescriptors()
        for _ in 0..<50 {
            for existing in ["fifo", "null", "link", "dir"] {
                _ = try? fs.create(root, parent: rootNodeID, name: name(existing), mode: S_IFREG | 0o644,
                                   flags: UInt32(O_RDWR), extras: CreateExtras())
            }
            _ = try? fs.open(root, node: fifo, flags: UInt32(O_RDONLY), killSuidGid: false)
            _ = try? fs.open(root, node: link, flags: UInt32(O_RDONLY), killSuidGid: false)
            _ = try? fs.opendir(root, node: file, flags: 0)
            _ = try? fs.lookup(root, parent: rootNodeID, name: name("missing"))
            _ = try? fs.lookup(root, parent: file, name: name("below-a-file"))
            var sink = CollectingSink(capacity: 4096)
            _ = try? fs.readdir(root, node: file, handle: fileHandle, offset: 0, plus: true, into: &sink)
            _ = try? fs.getxattr(root, node: fifo, name: name("user.none"), into: nil)
            _ = try? fs.setxattr(root, node: link, name: name("user.x"), value: UnsafeRawBufferPointer(start: nil, count: 0),
                                 flags: 0, extFlags: 0)
            var truncate = SetAttributes(valid: .size)
            truncate.size = 0
            _ = try? fs.setattr(root, node: fifo, truncate)
            _ = try? fs.setlk(root, node: file, handle: 999, owner: 1, lock: FileLock(start: 0, end: 1, type: F_WRLCK, pid: 1),
                              wait: true, flock: false)
        }
        XCTAssertEqual(openDescriptors(), before, "a failing request must close what it opened")
        XCTAssertEqual(fs.inodes.count, nodesBefore, "a failing request must not keep a lookup")
        XCTAssertEqual(fs.handles.withLock { $0.files.count }, 1)
    }
}

/// A string shared with the thread a test runs a request on.
final class ManagedAtomicBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value = ""
    func set(_ v: String) { lock.lock(); value = v; lock.unlock() }
    func get() -> String { lock.lock(); defer { lock.unlock() }; return value }
}

final class DescriptorReserveTests: PassthroughTestCase {
    func testOpensStopWithEMFILEBeforeTheDaemonsReserveAndResumeAfterRelease() throws {
        writeHostFile("f", "x")
        // A stand-in limit: 64 reserved plus room for the root and a few handles.
        fs = try makeFileSystem { $0.descriptorLimit = PassthroughFileSystem.reservedDescriptors + 8 }
        let entry = try fs.lookup(root, parent: rootNodeID, name: name("f"))
        var handles: [HandleID] = []
        var refusal: Errno?
        for _ in 0..<20 {
            do {
                handles.append(try fs.open(root, node: entry.nodeID, flags: UInt32(O_RDONLY), killSuidGid: false).handle)
            } catch {
                refusal = error
                break
            }
        }
        XCTAssertEqual(refusal, Errno.tooManyOpenFiles, "opened \(handles.count) without a refusal")
        XCTAssertLessThan(handles.count, 8)
        XCTAssertGreaterThan(handles.count, 0)
        // CREATE is refused the same way, before anything exists on the host.
        XCTAssertThrowsError(try fs.create(root, parent: rootNodeID, name: name("new"), mode: S_IFREG | 0o644,
                                           flags: UInt32(O_RDWR | O_CREAT), extras: CreateExtras())) {
            XCTAssertEqual($0 as? Errno, Errno.tooManyOpenFiles)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: hostPath("new")))
        // Releasing one makes room again.
        try fs.release(root, node: entry.nodeID, handle: handles.removeLast(), flags: 0, lockOwner: nil, flush: false, flockRelease: false)
        handles.append(try fs.open(root, node: entry.nodeID, flags: UInt32(O_RDONLY), killSuidGid: false).handle)
        for h in handles {
            try fs.release(root, node: entry.nodeID, handle: h, flags: 0, lockOwner: nil, flush: false, flockRelease: false)
        }
    }
}
