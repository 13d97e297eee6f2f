import XCTest
import Glibc
import CVirtioFS
import Posix
@testable import VhostUser

/// The dirty-page log: one bit per 4 KiB page of guest-physical address.
final class DirtyLogTests: XCTestCase {
    func withBitmap(bytes: Int, _ body: (DirtyBitmap, UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 8)
        defer { storage.deallocate() }
        storage.initializeMemory(as: UInt8.self, repeating: 0)
        try body(DirtyBitmap(unownedBytes: storage), storage)
    }

    func testMarksEveryPageARangeTouchesAndNoOther() {
        withBitmap(bytes: 4) { log, raw in
            log.mark(guestAddress: 0x1fff, length: 2)      // last byte of page 1, first of page 2
            XCTAssertEqual(raw[0], 0b0000_0110)
            log.mark(guestAddress: 0x9000, length: 0x1000) // exactly page 9
            XCTAssertEqual(raw[1], 0b0000_0010)
            log.mark(guestAddress: 0x10000, length: 0)     // nothing
            XCTAssertEqual(raw[2], 0)
            log.mark(guestAddress: 0x18000, length: 0x3000) // pages 24...26, byte 3
            XCTAssertEqual(raw[3], 0b0000_0111)
            XCTAssertTrue(log.isMarked(guestAddress: 0x1000))
            XCTAssertFalse(log.isMarked(guestAddress: 0x3000))
        }
    }

    func testPagesBeyondTheLogAreNotWrittenAndAddressesNearTheTopDoNotWrap() {
        withBitmap(bytes: 2) { log, raw in
            log.mark(guestAddress: 0xf000, length: 0x10000) // page 15 in the log, 16.. past it
            XCTAssertEqual(raw[1], 0b1000_0000)
            log.mark(guestAddress: UInt64.max - 10, length: 100)
            XCTAssertEqual(Array(raw), [0, 0b1000_0000])
        }
    }

    func testTheLogIsMappedFromItsFDAtItsOffset() throws {
        let fd = try Sys.memfdCreate("log")
        defer { Sys.close(fd) }
        try Sys.ftruncate(fd, 8192)
        let log = try DirtyBitmap(fd: fd, size: 64, offset: 4096 + 8)
        log.mark(guestAddress: 0x3000, length: 1)
        var byte: UInt8 = 0
        XCTAssertEqual(pread(fd, &byte, 1, 4096 + 8), 1)
        XCTAssertEqual(byte, 0b0000_1000, "bit 3 of the first byte at the log's offset")
    }

    func testALogReachingPastItsFileIsRefused() throws {
        let fd = try Sys.memfdCreate("log")
        defer { Sys.close(fd) }
        try Sys.ftruncate(fd, 4096)
        XCTAssertThrowsError(try DirtyBitmap(fd: fd, size: 4096, offset: 8))
        XCTAssertThrowsError(try DirtyBitmap(fd: fd, size: 0, offset: 0))
        XCTAssertThrowsError(try DirtyBitmap(fd: fd, size: 16, offset: UInt64.max - 4))
    }

    /// The frontend may shrink the log's file after SET_LOG_BASE: marking a page then
    /// must not kill the daemon with SIGBUS; the guard repairs it and says so.
    func testALogWhoseFileShrinksIsRepairedAndReportedInsteadOfSIGBUS() throws {
        let fd = try Sys.memfdCreate("log")
        defer { Sys.close(fd) }
        try Sys.ftruncate(fd, 8192)
        let notify = try Sys.eventfd(flags: CVFS_EFD_CLOEXEC | CVFS_EFD_NONBLOCK)
        defer { Sys.close(notify) }
        let log = try DirtyBitmap(fd: fd, size: 8192, offset: 0, faultNotifyFD: notify)
        let before = Sys.guardedFaultsRepaired
        try Sys.ftruncate(fd, 0)
        log.mark(guestAddress: 0x10_0000, length: 1)
        XCTAssertTrue(log.isMarked(guestAddress: 0x10_0000), "the repaired page is ordinary memory")
        XCTAssertEqual(Sys.guardedFaultsRepaired, before + 1)
        XCTAssertEqual(try Sys.eventfdDrain(notify), 1, "the backend hears of the fault")
    }

    /// A queue thread over `queue` (whose dirty log is already set), not started.
    func worker<H: VirtqueueHandler>(_ handler: H, _ queue: SplitQueue, replies: LateReplies? = nil) throws -> QueueWorker<H> {
        try QueueWorker(queueIndex: 0, queue: queue, kickFD: -1, callFD: nil, replies: replies,
                        handler: handler, logger: .discarding)
    }

    /// A drained chain marks the pages its reply was written to and the used ring's
    /// pages at log_guest_addr (not where the ring is mapped); readable buffers stay clean.
    func testDrainMarksReplyBuffersAndTheUsedRingAtItsLogAddress() throws {
        let guest = try FakeGuest()
        let ring = FakeRing(guest: guest, size: 8)
        var q = try ring.makeQueue()
        let usedLogAddress: UInt64 = 0x4_0000 // page 64, apart from the ring's own address
        try withBitmap(bytes: 128) { log, _ in
            q.dirtyLog = QueueDirtyLog(bitmap: log, memory: guest.memory, usedRingGuestAddress: usedLogAddress)
            let w = try worker(EchoHandler(), q)
            let request = ring.dataArea, reply = ring.dataArea + 0x3000
            guest.write([1, 2, 3], at: request)
            ring.setDescriptor(0, address: request, length: 3, flags: 1, next: 1)
            ring.setDescriptor(1, address: reply - 2, length: 16, flags: 2) // straddles two pages
            ring.makeAvailable(0)
            w.processBatch()
            XCTAssertEqual(ring.usedIndex, 1)
            XCTAssertEqual(guest.read(4, at: reply - 2), [0, 1, 2, 3])
            XCTAssertTrue(log.isMarked(guestAddress: reply - 2))
            XCTAssertTrue(log.isMarked(guestAddress: reply), "the reply's second page")
            XCTAssertFalse(log.isMarked(guestAddress: request), "a buffer only read is not dirty")
            XCTAssertTrue(log.isMarked(guestAddress: usedLogAddress), "used ring logged at log_guest_addr")
            XCTAssertFalse(log.isMarked(guestAddress: ring.usedRing), "not at the ring's own address")
            XCTAssertFalse(log.isMarked(guestAddress: ring.dataArea + 0x6000))
        }
    }

    /// Only bytes the handler wrote are marked, not the whole writable buffer.
    func testOnlyWrittenBytesAreMarked() throws {
        let guest = try FakeGuest()
        let ring = FakeRing(guest: guest, size: 8)
        var q = try ring.makeQueue()
        try withBitmap(bytes: 128) { log, _ in
            q.dirtyLog = QueueDirtyLog(bitmap: log, memory: guest.memory, usedRingGuestAddress: nil)
            let w = try worker(EchoHandler(), q)
            let reply = ring.dataArea + 0x1000
            ring.setDescriptor(0, address: reply, length: 0x3000, flags: 2)
            ring.makeAvailable(0)
            w.processBatch()
            XCTAssertEqual(ring.usedIndex, 1)
            XCTAssertTrue(log.isMarked(guestAddress: reply))
            XCTAssertFalse(log.isMarked(guestAddress: reply + 0x1000), "one byte was written")
            XCTAssertFalse(log.isMarked(guestAddress: ring.usedRing), "the used ring is not logged without VHOST_VRING_F_LOG")
        }
    }

    /// A detached chain (a parked lock request) is answered later by the queue thread:
    /// that write into guest memory and its used entry are logged like any other.
    func testALateReplyWrittenByTheQueueThreadIsLogged() throws {
        let guest = try FakeGuest()
        let ring = FakeRing(guest: guest, size: 8)
        var q = try ring.makeQueue()
        let usedLogAddress: UInt64 = 0x4_0000
        try withBitmap(bytes: 128) { log, _ in
            q.dirtyLog = QueueDirtyLog(bitmap: log, memory: guest.memory, usedRingGuestAddress: usedLogAddress)
            let handler = DetachingHandler()
            let w = try worker(handler, q, replies: try LateReplies())
            let request = ring.dataArea, reply = ring.dataArea + 0x5000
            guest.write([1], at: request)   // odd: the handler detaches it
            ring.setDescriptor(0, address: request, length: 1, flags: 1, next: 1)
            ring.setDescriptor(1, address: reply, length: 32, flags: 2)
            ring.makeAvailable(0)
            w.processBatch()
            XCTAssertEqual(ring.usedIndex, 0, "detached: not pushed yet")
            XCTAssertFalse(log.isMarked(guestAddress: reply))
            XCTAssertFalse(log.isMarked(guestAddress: usedLogAddress))
            XCTAssertEqual(([9, 9] as [UInt8]).withUnsafeBytes { handler.destination(1)?.send($0) }, true)
            w.processBatch(lateReplies: true)
            XCTAssertEqual(ring.usedIndex, 1)
            XCTAssertEqual(guest.read(2, at: reply), [9, 9])
            XCTAssertTrue(log.isMarked(guestAddress: reply), "the late reply's bytes")
            XCTAssertFalse(log.isMarked(guestAddress: reply + 0x1000))
            XCTAssertTrue(log.isMarked(guestAddress: usedLogAddress), "its used entry")
        }
    }

    func testSetVringAddrCarriesTheLogFlagAndAddress() throws {
        let codec = MessageCodec(queueCount: 2, maxQueueSize: 256)
        var payload = le(UInt32(1)) + le(UInt32(1)) + le(UInt64(0x1000)) + le(UInt64(0x2000)) + le(UInt64(0x3000))
        payload += le(UInt64(0xabc000))
        let request = try codec.decode(code: RequestCode.setVringAddr.rawValue, payload: payload, fds: [])
        XCTAssertEqual(request, .setVringAddr(queue: 1, VringAddresses(descriptorTable: 0x1000, usedRing: 0x2000, availableRing: 0x3000,
                                                                       logUsedRing: true, logGuestAddress: 0xabc000)))
    }
}
