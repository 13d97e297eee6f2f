import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// A SETLKW that has to wait must not hold up the queue it came on.
final class LockWaitTests: XCTestCase {
    private func lockBody(handle: UInt64, type: Int32) -> [UInt8] {
        let arg = fuse_lk_in(fh: handle, owner: handle, lk: fuse_file_lock(start: 0, end: UInt64.max, type: UInt32(type), pid: 1),
                             lk_flags: 0, padding: 0)
        return withUnsafeBytes(of: arg) { Array($0) }
    }

    /// A rig with one file opened three times; the first open holds a write lock.
    private func lockedFile() throws -> (rig: Rig, fuse: FuseClient, node: UInt64, holder: UInt64, waiter: UInt64) {
        try XCTSkipIf(DaemonUnderTest.isReference, "the reference daemon waits for locks on its queue thread")
        let rig = try Rig(extraArguments: ["-o", "posix_lock"], files: ["locked": "x"])
        let fuse = try rig.fuseClient(slots: 4)
        try fuse.initialize()
        let node = try fuse.lookup(name: "locked").nodeid
        let holder = try fuse.open(node: node, flags: O_RDWR).fh
        let waiter = try fuse.open(node: node, flags: O_RDWR).fh
        let taken = try fuse.call(.raw(opcode: FUSE_SETLK.rawValue, node: node, body: lockBody(handle: holder, type: F_WRLCK),
                                       replyCapacity: 16))
        XCTAssertEqual(taken.error, 0)
        return (rig, fuse, node, holder, waiter)
    }

    func testGetattrBehindAWaitingLockIsAnsweredWhileTheLockWaits() throws {
        let (rig, fuse, node, holder, waiter) = try lockedFile()
        defer { if testRun?.hasSucceeded == false { print(rig.daemon.log()) } }
        try fuse.start(.raw(opcode: FUSE_SETLKW.rawValue, node: node, body: lockBody(handle: waiter, type: F_WRLCK), replyCapacity: 16),
                       slot: 0)
        try fuse.start(.getattr(node: UInt64(FUSE_ROOT_ID)), slot: 1)
        var order: [UInt32] = []
        var lockError: Int32?
        // The GETATTR comes back although the SETLKW before it on the same queue is still waiting.
        while !order.contains(FUSE_GETATTR.rawValue) {
            try fuse.waitCompletions(timeoutMilliseconds: 5000) { reply in order.append(reply.opcode) }
        }
        XCTAssertEqual(order, [FUSE_GETATTR.rawValue], "the lock request is still waiting")
        // The holder lets go: the waiting request is granted.
        try fuse.start(.raw(opcode: FUSE_SETLK.rawValue, node: node, body: lockBody(handle: holder, type: F_UNLCK), replyCapacity: 16),
                       slot: 2)
        while lockError == nil {
            try fuse.waitCompletions(timeoutMilliseconds: 5000) { reply in
                order.append(reply.opcode)
                if reply.opcode == FUSE_SETLKW.rawValue { lockError = reply.error }
            }
        }
        XCTAssertEqual(lockError, 0, "granted once released")
        XCTAssertEqual(order.first, FUSE_GETATTR.rawValue)
        // Now the waiter holds it: the first handle cannot take it.
        let refused = try fuse.call(.raw(opcode: FUSE_SETLK.rawValue, node: node, body: lockBody(handle: holder, type: F_WRLCK),
                                         replyCapacity: 16))
        XCTAssertEqual(refused.error, -EAGAIN)
    }

    func testInterruptEndsAWaitingLockWithEINTR() throws {
        let (rig, fuse, node, _, waiter) = try lockedFile()
        defer { if testRun?.hasSucceeded == false { print(rig.daemon.log()) } }
        try fuse.start(.raw(opcode: FUSE_SETLKW.rawValue, node: node, body: lockBody(handle: waiter, type: F_WRLCK), replyCapacity: 16),
                       slot: 0)
        // The SETLKW just sent has the client's latest unique id; INTERRUPT names it.
        let attr = try fuse.call(.getattr(node: UInt64(FUSE_ROOT_ID)))
        let lockUnique = attr.unique - 1
        try fuse.start(.raw(opcode: FUSE_INTERRUPT.rawValue, node: 0,
                            body: withUnsafeBytes(of: fuse_interrupt_in(unique: lockUnique)) { Array($0) }, replyCapacity: 16),
                       slot: 2)
        var lockError: Int32?
        var interruptLength: UInt32?
        while lockError == nil || interruptLength == nil {
            try fuse.waitCompletions(timeoutMilliseconds: 5000) { reply in
                if reply.opcode == FUSE_SETLKW.rawValue { lockError = reply.error }
                if reply.opcode == FUSE_INTERRUPT.rawValue { interruptLength = reply.usedLength }
            }
        }
        XCTAssertEqual(lockError, -EINTR)
        XCTAssertEqual(interruptLength, 0, "INTERRUPT itself gets no reply")
    }
}
