import CVirtioFS
import Posix
import Synchronization

// Locks: GETLK, SETLK, SETLKW and INTERRUPT. A SETLKW that must wait is parked
// rather than holding the queue thread: its reply is detached from the transport and
// sent later through a `LockWaitCompletion`.

/// Whether a SETLKW was answered at once or parked.
public enum LockWaitOutcome: Sendable, Equatable {
    /// Granted now: the dispatcher replies success at once.
    case granted
    /// The filesystem took a `LockWaitCompletion` and will finish it later.
    case parked
}

/// The pending answer to one parked SETLKW (or blocking flock): the filesystem
/// finishes it once, from whichever thread saw the lock granted, the wait
/// interrupted, or the wait fail.
public final class LockWaitCompletion: Sendable {
    /// The request's unique id (FUSE_INTERRUPT names it).
    public let unique: UInt64
    private let reply: any LateReply
    private let finished = Atomic<Bool>(false)

    public init(unique: UInt64, reply: any LateReply) {
        self.unique = unique
        self.reply = reply
    }

    /// Answers the request: nil when the lock was granted, otherwise the errno.
    /// Returns false when the request can no longer be answered (its transport
    /// dropped it, or it was already finished): a filesystem that was granted
    /// the lock must then give it back, since nobody will ever know it holds it.
    @discardableResult
    public func finish(_ error: Errno?) -> Bool {
        guard !finished.exchange(true, ordering: .acquiringAndReleasing) else { return false }
        var out = fuse_out_header()
        out.len = UInt32(FuseWire.outHeaderSize)
        out.error = -(error?.rawValue ?? 0)
        out.unique = unique
        return withUnsafeBytes(of: &out) { reply.send($0) }
    }
}

extension Server {
    /// GETLK: the reply names the first conflicting lock, or the asked-for one as F_UNLCK.
    func handleGetlk<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_lk_in.self, &r)
        let lock = try filesystem.getlk(q.context, node: q.node, handle: arg.fh, owner: arg.owner, lock: FileLock(arg.lk))
        var out = fuse_lk_out()
        out.lk = fuse_file_lock(lock)
        return Self.reply(out, q.unique, &w)
    }

    /// SETLK: take or drop a lock without waiting.
    func handleSetlk<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_lk_in.self, &r)
        try filesystem.setlk(q.context, node: q.node, handle: arg.fh, owner: arg.owner, lock: FileLock(arg.lk),
                             wait: false, flock: arg.lk_flags & UInt32(FUSE_LK_FLOCK) != 0)
        return Self.replyEmpty(q.unique, &w)
    }

    /// SETLKW: the filesystem either answers at once or parks the request; a
    /// parked request is answered through its transport's late reply, so the
    /// thread that carried it goes back to serving other requests.
    func handleSetlkw<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        let arg = try Self.read(fuse_lk_in.self, &r)
        var taken: LockWaitCompletion?
        let outcome: LockWaitOutcome
        do {
            outcome = try filesystem.setlkw(q.context, node: q.node, handle: arg.fh, owner: arg.owner, lock: FileLock(arg.lk),
                                            flock: arg.lk_flags & UInt32(FUSE_LK_FLOCK) != 0) { () -> LockWaitCompletion? in
                // Once, and before anything is written.
                guard taken == nil, w.written == 0, let reply = w.detach() else { return nil }
                let completion = LockWaitCompletion(unique: q.unique, reply: reply)
                taken = completion
                return completion
            }
        } catch {
            // Once detached, the writer is no longer ours: answer through the completion.
            guard let taken else { throw error }
            taken.finish(error)
            return 0
        }
        switch outcome {
        case .granted:
            guard let taken else { return Self.replyEmpty(q.unique, &w) }
            taken.finish(nil)
            return 0
        case .parked:
            guard taken != nil else { throw .noLocks }
            return 0
        }
    }

    /// INTERRUPT: never answered. The filesystem ends a parked lock wait for that
    /// request with EINTR; nothing else waits long enough to be worth interrupting.
    func handleInterrupt<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        if let arg = r.readWire(fuse_interrupt_in.self) { filesystem.interruptLockWait(unique: arg.unique) }
        return 0
    }
}
