#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix
import Synchronization

/// One lock request on an open file: a POSIX record lock on the file's open
/// file description (OFD lock), or a BSD `flock`. Holds its own reference to
/// the file, so a RELEASE while it waits cannot close the descriptor under it.
struct LockRequest: Sendable {
    enum Kind {
        case record(Glibc.flock)
        case bsd(Int32)
    }
    let file: OpenFile
    let kind: Kind

    init(file: OpenFile, lock: FileLock, flock isFlock: Bool) throws(Errno) {
        self.file = file
        if isFlock {
            switch lock.type {
            case F_RDLCK: kind = .bsd(LOCK_SH)
            case F_WRLCK: kind = .bsd(LOCK_EX)
            case F_UNLCK: kind = .bsd(LOCK_UN)
            default: throw Errno.invalidArgument
            }
        } else {
            guard lock.type == F_RDLCK || lock.type == F_WRLCK || lock.type == F_UNLCK else { throw Errno.invalidArgument }
            kind = .record(try PassthroughFileSystem.hostLock(lock))
        }
    }

    var isUnlock: Bool {
        switch kind {
        case .record(let l): return Int32(l.l_type) == F_UNLCK
        case .bsd(let op): return op == LOCK_UN
        }
    }

    /// Takes the lock if it is free now; EAGAIN when another holder conflicts.
    func attempt() throws(Errno) {
        do {
            switch kind {
            case .record(var l): try Sys.fcntlLock(file.fd, CVFS_F_OFD_SETLK, &l)
            case .bsd(let op): try Sys.flock(file.fd, op | LOCK_NB)
            }
        } catch {
            // Some systems answer EACCES for a conflicting record lock.
            throw error == .accessDenied ? .wouldBlock : error
        }
    }

    /// Blocks until granted; EINTR when the thread is signalled.
    func wait() throws(Errno) {
        switch kind {
        case .record(var l): try Sys.fcntlLockWaitInterruptibly(file.fd, &l)
        case .bsd(let op): try Sys.flockWaitInterruptibly(file.fd, op)
        }
    }

    /// Gives back a lock granted to a request nobody can be told about any more.
    func release() {
        switch kind {
        case .record(var l):
            l.l_type = Int16(F_UNLCK)
            try? Sys.fcntlLock(file.fd, CVFS_F_OFD_SETLK, &l)
        case .bsd:
            try? Sys.flock(file.fd, LOCK_UN)
        }
    }
}

/// SETLKW requests parked while their lock is held by someone else. Each waits
/// in a blocking `F_OFD_SETLKW` / `flock` on a thread of its own, started for
/// it and ended with it, so no thread that serves requests ever waits on a
/// lock. At most `limit` (256 by default) wait at once; ENOLCK beyond. A waiter is cancelled
/// (FUSE_INTERRUPT, RELEASE of its handle, DESTROY) by a thread-directed signal
/// whose handler does nothing but end the blocking call with EINTR.
///
/// Synchronisation: the table is behind a mutex; a waiter's thread is signalled
/// only while its entry is in the table, which it leaves before it exits, so a
/// signal never reaches a thread that is gone.
final class LockWaits: Sendable {
    /// Most requests parked at once by default; documented in docs/security.md and the man page.
    static let defaultLimit = 256
    let limit: Int
    /// The signal that wakes a waiter to be cancelled.
    static let wakeupSignal = SIGUSR2
    /// How often a cancelled waiter is signalled again until it leaves: a signal
    /// that lands just before it enters the blocking call would be lost.
    static let resignalNanoseconds = 2_000_000

    private struct Waiter {
        let handle: HandleID
        var thread: pthread_t?
        var cancelled = false
    }

    private struct State {
        var waiters: [UInt64: Waiter] = [:]
        var resignalling = false
    }

    private let state = Mutex(State())
    private let logger: Logger

    init(logger: Logger, limit: Int = LockWaits.defaultLimit) {
        self.logger = logger
        self.limit = max(limit, 0)
        // Installed before any wait (and before the sandbox), once per process.
        _ = Self.wakeupInstalled
    }

    /// Requests parked now (for tests).
    var count: Int { state.withLock { $0.waiters.count } }

    /// Whether the wake-up signal's handler is in place (without it no wait could be cancelled).
    private static let wakeupInstalled: Bool = (try? Signals.installWakeup(wakeupSignal)) != nil

    /// Parks `request` for request `unique` and returns `.parked`, or throws
    /// (ENOLCK at the limit or without a late reply; EINVAL for a unique id that
    /// already waits) having parked nothing.
    func park(_ request: LockRequest, unique: UInt64, handle: HandleID,
              completion park: () -> LockWaitCompletion?) throws(Errno) -> LockWaitOutcome {
        guard Self.wakeupInstalled else { throw .noLocks }
        try state.withLock { (s) throws(Errno) in
            guard s.waiters.count < limit else { throw .noLocks }
            guard s.waiters[unique] == nil else { throw .invalidArgument }
            s.waiters[unique] = Waiter(handle: handle)
        }
        guard let completion = park() else {
            _ = state.withLock { $0.waiters.removeValue(forKey: unique) }
            throw .noLocks
        }
        do {
            try Sys.startDetachedThread { [self] in wait(request, unique: unique, completion) }
        } catch {
            _ = state.withLock { $0.waiters.removeValue(forKey: unique) }
            logger.warning("no thread for a lock wait: \(error)")
            throw .noLocks
        }
        return .parked
    }

    /// A waiter's thread: blocks until granted or cancelled, then answers.
    private func wait(_ request: LockRequest, unique: UInt64, _ completion: LockWaitCompletion) {
        let me = Sys.currentThread()
        var result: Errno?
        while true {
            let cancelled = state.withLock { s -> Bool in
                s.waiters[unique]?.thread = me
                return s.waiters[unique]?.cancelled ?? true
            }
            if cancelled {
                result = .interrupted
                break
            }
            do {
                try request.wait()
                result = nil
                break
            } catch {
                if error == .interrupted { continue }
                result = error
                break
            }
        }
        if !completion.finish(result) && result == nil {
            // Granted, but the request is gone (its queue was reset): nobody would ever unlock it.
            request.release()
        }
        // Last: a cancel may still signal this thread until the entry is gone (harmless now).
        _ = state.withLock { $0.waiters.removeValue(forKey: unique) }
    }

    /// FUSE_INTERRUPT: ends the wait of request `unique` with EINTR.
    func cancel(unique: UInt64) {
        cancel { unique_, _ in unique_ == unique }
    }

    /// RELEASE: the guest closed the handle, so nobody waits for its requests' answers.
    func cancel(handle: HandleID) {
        cancel { _, waiter in waiter.handle == handle }
    }

    /// DESTROY: every wait ends.
    func cancelAll() {
        cancel { _, _ in true }
    }

    private func cancel(where matches: (UInt64, Waiter) -> Bool) {
        let startResignalling = state.withLock { s -> Bool in
            var any = false
            for (unique, waiter) in s.waiters where matches(unique, waiter) {
                s.waiters[unique]?.cancelled = true
                if let thread = waiter.thread { try? Sys.signalThread(thread, Self.wakeupSignal) }
                any = true
            }
            guard any, !s.resignalling else { return false }
            s.resignalling = true
            return true
        }
        if startResignalling {
            do {
                try Sys.startDetachedThread { [self] in resignal() }
            } catch {
                state.withLock { $0.resignalling = false }
                logger.warning("no thread to repeat a lock wait's cancellation: \(error)")
            }
        }
    }

    /// Signals cancelled waiters again until none is left.
    private func resignal() {
        while true {
            Sys.sleep(nanoseconds: Self.resignalNanoseconds)
            let left = state.withLock { s -> Bool in
                var left = false
                for waiter in s.waiters.values where waiter.cancelled {
                    left = true
                    if let thread = waiter.thread { try? Sys.signalThread(thread, Self.wakeupSignal) }
                }
                if !left { s.resignalling = false }
                return left
            }
            if !left { return }
        }
    }
}

extension PassthroughFileSystem {
    /// A guest lock range as a host `struct flock` (OFD locks: pid 0).
    static func hostLock(_ lock: FileLock) throws(Errno) -> flock {
        var l = flock()
        l.l_type = Int16(truncatingIfNeeded: lock.type)
        l.l_whence = Int16(SEEK_SET)
        guard lock.start <= UInt64(Int64.max) else { throw Errno.invalidArgument }
        l.l_start = off_t(lock.start)
        if lock.end == UInt64.max || lock.end >= UInt64(Int64.max) {
            l.l_len = 0 // to the end of the file
        } else {
            guard lock.end >= lock.start else { throw Errno.invalidArgument }
            l.l_len = off_t(lock.end - lock.start + 1)
        }
        l.l_pid = 0 // OFD locks require 0
        return l
    }

    /// GETLK: F_OFD_GETLK on the handle's descriptor; a free range comes back as
    /// F_UNLCK over the range asked about. ENOSYS when POSIX locks are off.
    public func getlk(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock) throws(Errno) -> FileLock {
        guard configuration.posixLocks else { throw Errno.noSys }
        let file = try openFile(handle)
        var l = try Self.hostLock(lock)
        try Sys.fcntlLock(file.fd, CVFS_F_OFD_GETLK, &l)
        if Int32(l.l_type) == F_UNLCK { return FileLock(start: lock.start, end: lock.end, type: F_UNLCK, pid: 0) }
        let start = UInt64(max(0, l.l_start))
        let end = l.l_len == 0 ? UInt64(Int64.max) : start &+ UInt64(max(1, l.l_len)) &- 1
        return FileLock(start: start, end: end, type: Int32(l.l_type), pid: UInt32(bitPattern: l.l_pid))
    }

    private func lockRequest(_ handle: HandleID, _ lock: FileLock, flock isFlock: Bool) throws(Errno) -> LockRequest {
        let file = try openFile(handle)
        if isFlock {
            guard configuration.flock else { throw Errno.noSys }
        } else {
            guard configuration.posixLocks else { throw Errno.noSys }
        }
        return try LockRequest(file: file, lock: lock, flock: isFlock)
    }

    /// SETLK: never waits (waiting is `setlkw`'s, which parks); a caller that
    /// asks to wait here gets ENOLCK rather than a thread held hostage.
    public func setlk(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock, wait: Bool, flock isFlock: Bool) throws(Errno) {
        let request = try lockRequest(handle, lock, flock: isFlock)
        do {
            try request.attempt()
        } catch {
            throw wait && error == .wouldBlock ? .noLocks : error
        }
    }

    /// SETLKW: tries the lock at once; one that must wait is parked on a waiter thread
    /// (`LockWaits`) and answered later through the completion `park` gives. An unlock
    /// never waits.
    public func setlkw(_ ctx: RequestContext, node: NodeID, handle: HandleID, owner: UInt64, lock: FileLock, flock isFlock: Bool,
                       park: () -> LockWaitCompletion?) throws(Errno) -> LockWaitOutcome {
        let request = try lockRequest(handle, lock, flock: isFlock)
        do {
            try request.attempt()
            return .granted
        } catch {
            guard error == .wouldBlock, !request.isUnlock else { throw error }
        }
        return try lockWaits.park(request, unique: ctx.unique, handle: handle, completion: park)
    }

    /// INTERRUPT of a parked SETLKW: its wait ends with EINTR.
    public func interruptLockWait(unique: UInt64) {
        lockWaits.cancel(unique: unique)
    }
}
