import XCTest
import Foundation
import Glibc
import CVirtioFS
import FUSE
import Posix
import Synchronization
@testable import Passthrough

/// A late reply destination that records the one reply it is sent.
final class RecordedLateReply: LateReply {
    let accept: Bool
    let reply = Mutex<[UInt8]?>(nil)
    let arrived = DispatchSemaphore(value: 0)
    init(accept: Bool = true) { self.accept = accept }

    func send(_ bytes: UnsafeRawBufferPointer) -> Bool {
        reply.withLock { $0 = Array(bytes) }
        arrived.signal()
        return accept
    }

    /// The errno of the reply (0 = success), waiting up to `seconds` for it; nil if none came.
    func error(within seconds: Double = 10) -> Int32? {
        guard arrived.wait(timeout: .now() + seconds) == .success else { return nil }
        return reply.withLock { bytes in
            bytes.map { -$0.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 4, as: Int32.self) } }
        }
    }

    var hasArrived: Bool { reply.withLock { $0 != nil } }
}

final class LockWaitTests: PassthroughTestCase {
    let whole = FileLock(start: 0, end: UInt64.max, type: F_WRLCK, pid: 1)
    var node: NodeID = 0

    private func openHandle() throws -> HandleID {
        try fs.open(root, node: node, flags: UInt32(O_RDWR), killSuidGid: false).handle
    }

    private func lockFile() throws -> (holder: HandleID, waiter: HandleID, probe: HandleID) {
        writeHostFile("held", "x")
        node = try fs.lookup(root, parent: rootNodeID, name: name("held")).nodeID
        return (try openHandle(), try openHandle(), try openHandle())
    }

    /// Parks a SETLKW on `handle` as request `unique`; the reply goes to `late`.
    private func park(_ handle: HandleID, unique: UInt64, flock: Bool = false, _ late: RecordedLateReply) throws -> LockWaitOutcome {
        let ctx = RequestContext(unique: unique, uid: 0, gid: 0, pid: 1)
        return try fs.setlkw(ctx, node: node, handle: handle, owner: 2, lock: whole, flock: flock) {
            LockWaitCompletion(unique: unique, reply: late)
        }
    }

    private func waitUntilNoWaiters(file: StaticString = #filePath, line: UInt = #line) {
        let deadline = Date().addingTimeInterval(10)
        while fs.lockWaits.count > 0 && Date() < deadline { usleep(1000) }
        XCTAssertEqual(fs.lockWaits.count, 0, "the waiter thread ended", file: file, line: line)
    }

    func testFreeLockIsGrantedAtOnceWithoutParking() throws {
        let (holder, _, probe) = try lockFile()
        var asked = false
        let outcome = try fs.setlkw(root, node: node, handle: holder, owner: 1, lock: whole, flock: false) {
            asked = true
            return nil
        }
        XCTAssertEqual(outcome, .granted)
        XCTAssertFalse(asked, "no late reply is taken for a lock that is free")
        assertErrno(.wouldBlock) { try fs.setlk(root, node: node, handle: probe, owner: 3, lock: whole, wait: false, flock: false) }
    }

    func testWaitingLockIsParkedAndGrantedWhenTheHolderReleases() throws {
        let (holder, waiter, probe) = try lockFile()
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: whole, wait: false, flock: false)
        let late = RecordedLateReply()
        XCTAssertEqual(try park(waiter, unique: 10, late), .parked, "the calling thread is free again")
        XCTAssertFalse(late.hasArrived)
        XCTAssertEqual(fs.lockWaits.count, 1)
        var unlock = whole
        unlock.type = F_UNLCK
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: unlock, wait: false, flock: false)
        XCTAssertEqual(late.error(), 0, "granted once the holder let go")
        assertErrno(.wouldBlock) { try fs.setlk(root, node: node, handle: probe, owner: 3, lock: whole, wait: false, flock: false) }
        waitUntilNoWaiters()
    }

    func testBlockingFlockIsParkedAndGranted() throws {
        let (holder, waiter, probe) = try lockFile()
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: whole, wait: false, flock: true)
        let late = RecordedLateReply()
        XCTAssertEqual(try park(waiter, unique: 11, flock: true, late), .parked)
        var unlock = whole
        unlock.type = F_UNLCK
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: unlock, wait: false, flock: true)
        XCTAssertEqual(late.error(), 0)
        assertErrno(.wouldBlock) { try fs.setlk(root, node: node, handle: probe, owner: 3, lock: whole, wait: false, flock: true) }
    }

    func testInterruptEndsTheWaitWithEINTR() throws {
        let (holder, waiter, probe) = try lockFile()
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: whole, wait: false, flock: false)
        let late = RecordedLateReply()
        XCTAssertEqual(try park(waiter, unique: 12, late), .parked)
        fs.interruptLockWait(unique: 999) // someone else's: no effect
        fs.interruptLockWait(unique: 12)
        XCTAssertEqual(late.error(), EINTR)
        waitUntilNoWaiters()
        // The holder still holds; the waiter got nothing.
        var unlock = whole
        unlock.type = F_UNLCK
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: unlock, wait: false, flock: false)
        try fs.setlk(root, node: node, handle: probe, owner: 3, lock: whole, wait: false, flock: false)
    }

    func testInterruptsRightAfterParkingAreNeverLost() throws {
        // A cancel may land between the waiter's check and its blocking call; it is repeated until it lands.
        let (holder, waiter, _) = try lockFile()
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: whole, wait: false, flock: false)
        for i in 0..<50 {
            let late = RecordedLateReply()
            XCTAssertEqual(try park(waiter, unique: UInt64(100 + i), late), .parked)
            fs.interruptLockWait(unique: UInt64(100 + i))
            XCTAssertEqual(late.error(), EINTR, "round \(i)")
        }
        waitUntilNoWaiters()
    }

    func testReleasingTheHandleEndsItsWait() throws {
        let (holder, waiter, _) = try lockFile()
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: whole, wait: false, flock: false)
        let late = RecordedLateReply()
        XCTAssertEqual(try park(waiter, unique: 13, late), .parked)
        try fs.release(root, node: node, handle: waiter, flags: 0, lockOwner: nil, flush: false, flockRelease: false)
        XCTAssertEqual(late.error(), EINTR)
        waitUntilNoWaiters()
    }

    func testLockGrantedAfterTheRequestIsGoneIsGivenBack() throws {
        let (holder, waiter, probe) = try lockFile()
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: whole, wait: false, flock: false)
        // The transport refuses the reply, as a reset queue does.
        let late = RecordedLateReply(accept: false)
        XCTAssertEqual(try park(waiter, unique: 14, late), .parked)
        var unlock = whole
        unlock.type = F_UNLCK
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: unlock, wait: false, flock: false)
        XCTAssertEqual(late.error(), 0)
        waitUntilNoWaiters()
        // Nobody holds the lock for the dropped request.
        try fs.setlk(root, node: node, handle: probe, owner: 3, lock: whole, wait: false, flock: false)
    }

    func testDestroyEndsEveryWait() throws {
        let (holder, waiter, _) = try lockFile()
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: whole, wait: false, flock: false)
        let late = RecordedLateReply()
        XCTAssertEqual(try park(waiter, unique: 15, late), .parked)
        fs.destroy()
        XCTAssertEqual(late.error(), EINTR)
        waitUntilNoWaiters()
    }

    func testParkedRequestsAreBoundedWithENOLCK() throws {
        fs = try makeFileSystem { $0.maxLockWaits = 2 }
        let (holder, waiter, probe) = try lockFile()
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: whole, wait: false, flock: false)
        let replies = (0..<3).map { _ in RecordedLateReply() }
        XCTAssertEqual(try park(waiter, unique: 20, replies[0]), .parked)
        XCTAssertEqual(try park(probe, unique: 21, replies[1]), .parked)
        assertErrno(.noLocks) { try park(waiter, unique: 22, replies[2]) }
        XCTAssertFalse(replies[2].hasArrived, "a refused request is answered by the dispatcher, not late")
        fs.interruptLockWait(unique: 20)
        fs.interruptLockWait(unique: 21)
        XCTAssertEqual(replies[0].error(), EINTR)
        XCTAssertEqual(replies[1].error(), EINTR)
        waitUntilNoWaiters()
    }

    func testWaitWithoutALateReplyIsRefusedWithENOLCK() throws {
        let (holder, waiter, _) = try lockFile()
        try fs.setlk(root, node: node, handle: holder, owner: 1, lock: whole, wait: false, flock: false)
        assertErrno(.noLocks) {
            try fs.setlkw(root, node: node, handle: waiter, owner: 2, lock: whole, flock: false) { nil }
        }
        XCTAssertEqual(fs.lockWaits.count, 0)
    }
}
