import XCTest
import Foundation
import CVirtioFS
import Posix
import Synchronization
@testable import FUSE

/// Records the one late reply a detached request gets.
final class RecordingLateReply: LateReply {
    let bytes = Mutex<[UInt8]?>(nil)
    func send(_ reply: UnsafeRawBufferPointer) -> Bool {
        bytes.withLock { $0 = Array(reply) }
        return true
    }
    var reply: Reply? { bytes.withLock { $0.map { Reply(length: $0.count, bytes: $0) } } }
}

/// A writer over a buffer whose transport can answer late.
struct DetachableWriter: FuseWriter {
    var buffer: MemoryWriter
    let late: RecordingLateReply
    var detached = false
    var capacity: Int { buffer.capacity }
    var written: Int { buffer.written }
    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Bool { buffer.write(bytes) }
    mutating func overwrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool { buffer.overwrite(bytes, at: offset) }
    mutating func withIOVecs<E: Error>(count: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int) throws(E) -> Int? {
        try buffer.withIOVecs(count: count, body)
    }
    mutating func detach() -> (any LateReply)? {
        detached = true
        return late
    }
}

/// A filesystem whose SETLKW parks (or grants, or fails) as told, and whose
/// interrupt ends the parked wait the way a real one must.
final class ParkingFS: FileSystem, @unchecked Sendable {
    enum Mode { case grant, park, parkThenFail(Errno), claimParkedWithoutCompletion }
    var mode = Mode.park
    let parked = Mutex<[UInt64: LockWaitCompletion]>([:])
    let interrupted = Mutex<[UInt64]>([])

    func initialize(capable: InitFlags) throws(Errno) -> InitFlags { [] }

    func setlkw(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock, flock: Bool,
                park: () -> LockWaitCompletion?) throws(Errno) -> LockWaitOutcome {
        switch mode {
        case .grant:
            return .granted
        case .park:
            guard let completion = park() else { throw .noLocks }
            parked.withLock { $0[ctx.unique] = completion }
            return .parked
        case .parkThenFail(let e):
            _ = park()
            throw e
        case .claimParkedWithoutCompletion:
            return .parked
        }
    }

    func interruptLockWait(unique: UInt64) {
        interrupted.withLock { $0.append(unique) }
        parked.withLock { $0.removeValue(forKey: unique) }?.finish(.interrupted)
    }
}

final class LockWaitDispatchTests: XCTestCase {
    let lockIn = bytes(of: fuse_lk_in(fh: 9, owner: 5, lk: fuse_file_lock(start: 0, end: UInt64.max, type: UInt32(F_WRLCK), pid: 42),
                                      lk_flags: 0, padding: 0))

    /// Sends `request` through a detachable writer: the immediate reply and the writer's late reply.
    func sendDetachable<FS: FileSystem>(_ server: Server<FS>, _ request: Request) -> (now: Int, written: Int, detached: Bool, late: RecordingLateReply) {
        var input = request.bytes
        let late = RecordingLateReply()
        var output = [UInt8](repeating: 0, count: 4096)
        let (n, written, detached) = input.withUnsafeMutableBytes { inBytes in
            output.withUnsafeMutableBytes { outBytes in
                var reader = MemoryReader(UnsafeRawBufferPointer(inBytes))
                var writer = DetachableWriter(buffer: MemoryWriter(outBytes), late: late)
                let n = server.handle(&reader, &writer)
                return (n, writer.written, writer.detached)
            }
        }
        return (n, written, detached, late)
    }

    func testParkedSetlkwAnswersNothingNowAndLaterWithItsUnique() {
        let fs = ParkingFS()
        let server = initializedServer(fs)
        var request = Request(.setlkw, lockIn)
        request.unique = 4242
        let result = sendDetachable(server, request)
        XCTAssertEqual(result.now, 0, "no reply while the lock is awaited")
        XCTAssertEqual(result.written, 0)
        XCTAssertTrue(result.detached)
        XCTAssertNil(result.late.reply)
        let completion = fs.parked.withLock { $0[4242] }
        XCTAssertEqual(completion?.finish(nil), true)
        XCTAssertEqual(result.late.reply?.error, 0)
        XCTAssertEqual(result.late.reply?.header?.unique, 4242)
        XCTAssertEqual(result.late.reply?.header?.len, 16)
        XCTAssertEqual(completion?.finish(.interrupted), false, "a request is answered once")
    }

    func testInterruptEndsTheParkedWaitWithEINTR() {
        let fs = ParkingFS()
        let server = initializedServer(fs)
        var request = Request(.setlkw, lockIn)
        request.unique = 100
        let result = sendDetachable(server, request)
        XCTAssertEqual(result.now, 0)
        var interrupt = Request(.interrupt, bytes(of: fuse_interrupt_in(unique: 100)))
        interrupt.unique = 101
        XCTAssertEqual(send(server, interrupt).length, 0, "INTERRUPT itself is never answered")
        XCTAssertEqual(fs.interrupted.withLock { $0 }, [100])
        XCTAssertEqual(result.late.reply?.error, -EINTR)
        XCTAssertEqual(result.late.reply?.header?.unique, 100)
    }

    func testSetlkwGrantedAtOnceIsAnsweredAtOnce() {
        let fs = ParkingFS()
        fs.mode = .grant
        let result = sendDetachable(initializedServer(fs), Request(.setlkw, lockIn))
        XCTAssertEqual(result.now, 16)
        XCTAssertFalse(result.detached)
    }

    func testFailureAfterDetachingIsAnsweredLate() {
        let fs = ParkingFS()
        fs.mode = .parkThenFail(.deadlock)
        let result = sendDetachable(initializedServer(fs), Request(.setlkw, lockIn))
        XCTAssertEqual(result.now, 0)
        XCTAssertEqual(result.late.reply?.error, -EDEADLK)
    }

    func testTransportThatCannotAnswerLateGetsENOLCK() {
        let fs = ParkingFS()
        let server = initializedServer(fs)
        XCTAssertEqual(send(server, Request(.setlkw, lockIn)).error, -ENOLCK)
        fs.mode = .claimParkedWithoutCompletion
        XCTAssertEqual(send(server, Request(.setlkw, lockIn)).error, -ENOLCK,
                       "a filesystem claiming to park without a completion cannot leave the request unanswered")
    }

    func testSetlkNeverWaits() {
        let fs = RecordingFS()
        let server = initializedServer(fs)
        XCTAssertEqual(send(server, Request(.setlk, lockIn)).error, 0)
        XCTAssertTrue(fs.calls.last?.hasSuffix("wait=false flock=false") ?? false)
    }
}
