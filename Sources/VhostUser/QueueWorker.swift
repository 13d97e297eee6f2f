#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// One chain handler for the device's queues.
public protocol VirtqueueHandler: Sendable {
    /// One chain from queue `queueIndex` (0 = hiprio). Returns the used length (bytes written to `writer`).
    func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32
}

/// The thread serving one started queue: waits on its kick eventfd, its late
/// replies' eventfd and a stop eventfd, drains every available chain through
/// the handler (inline, or through the pool when many are pending), writes the
/// replies finished late by other threads, and signals the call eventfd once
/// per batch. It alone writes the used ring.
///
/// Synchronisation: between `start()` and the join in `stop()` only the queue
/// thread touches `queue`, `broken`, `malformedChains` and `batch`; the backend
/// reads them after the join, which orders the accesses.
final class QueueWorker<Handler: VirtqueueHandler>: @unchecked Sendable {
    let queueIndex: Int
    var queue: SplitQueue
    private(set) var broken = false
    private(set) var malformedChains = 0
    private let kickFD: Int32
    private let callFD: Int32?
    private let stopFD: Int32
    private let handler: Handler
    private let logger: Logger
    private var thread: pthread_t?
    /// Replies to detached chains; outlives this thread (the backend keeps it per queue).
    let replies: LateReplies
    /// With a pool: batches of at least `poolThreshold` pending chains go to it.
    private let pool: WorkerPool?
    private let poolThreshold: Int
    /// The chains taken off the ring at once, and the iovec storage they are walked into.
    private let batch: ChainBatch<Handler>

    /// `replies` nil: a fresh set, for a queue whose late replies need not outlive this thread.
    init(queueIndex: Int, queue: SplitQueue, kickFD: Int32, callFD: Int32?, replies: LateReplies? = nil,
         handler: Handler, logger: Logger, pool: WorkerPool? = nil, poolThreshold: Int = 4) throws(Errno) {
        let late: LateReplies
        if let replies { late = replies } else { late = try LateReplies() }
        self.queueIndex = queueIndex
        self.queue = queue
        self.kickFD = kickFD
        self.callFD = callFD
        self.replies = late
        self.handler = handler
        self.logger = logger
        self.stopFD = try Sys.eventfd()
        self.pool = pool
        self.poolThreshold = max(poolThreshold, 1)
        // With a pool, enough chains per batch to keep every pool thread busy twice over.
        batch = ChainBatch(handler: handler, queueIndex: queueIndex, queueSize: queue.size,
                           maxChains: pool.map { min(2 * $0.size, queue.size) } ?? 1,
                           replies: late, memory: queue.memory, dirtyLog: queue.dirtyLog)
    }

    deinit {
        Sys.close(stopFD)
    }

    func start() throws(Errno) {
        thread = try Sys.startThread { [self] in run() }
    }

    /// Asks the thread to finish its batch and exit, then joins it.
    func stop() {
        guard let thread else { return }
        try? Sys.eventfdSignal(stopFD)
        Sys.joinThread(thread)
        self.thread = nil
    }

    /// How long to watch the ring after a batch before sleeping, learned as it goes.
    var spin = SpinPolicy()

    /// True when chains are available now or became so within the spin window.
    private func spinUntilAvailable() -> Bool {
        guard !broken else { return false }
        // A drain that took its share returns with chains still pending, for which no
        // kick will come: look once whatever the window, or they would wait forever.
        if queue.pendingCount > 0 { return true }
        let window = spin.nextWindow()
        guard window > 0 else { return false }
        let deadline = Sys.monotonicNanoseconds() &+ window
        repeat {
            if queue.pendingCount > 0 {
                spin.record(found: true, window: window)
                return true
            }
            // Leave the CPU to the frontend if it shares ours.
            Sys.yieldThread()
        } while Sys.monotonicNanoseconds() < deadline
        spin.record(found: false, window: window)
        return false
    }

    private func run() {
        // Chains (and late replies) may already be waiting (a queue restarted after a table change).
        processBatch(lateReplies: true)
        while true {
            // With work found by spinning, only look (timeout 0) whether a stop came.
            let found = spinUntilAvailable()
            var fds = (pollfd(fd: kickFD, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: replies.eventFD, events: Int16(POLLIN), revents: 0))
            do {
                _ = try withUnsafeMutableBytes(of: &fds) { (raw) throws(Errno) -> Int in
                    try Sys.poll(raw.bindMemory(to: pollfd.self), timeoutMilliseconds: found ? 0 : -1)
                }
            } catch {
                logger.error("queue \(queueIndex): poll failed: \(error)")
                return
            }
            let (kick, stop, late) = (fds.0.revents, fds.1.revents, fds.2.revents)
            if stop != 0 { return }
            if kick & Int16(POLLNVAL | POLLERR | POLLHUP) != 0 {
                logger.error("queue \(queueIndex): kick fd failed; stopping the queue")
                return
            }
            if kick & Int16(POLLIN) != 0 {
                _ = try? Sys.eventfdDrain(kickFD)
            }
            if found || kick & Int16(POLLIN) != 0 || late != 0 {
                processBatch(lateReplies: late != 0)
            }
        }
    }

    /// Handles what is available; with `lateReplies`, first writes the replies
    /// other threads finished (only when their eventfd fired: looking costs a syscall).
    func processBatch(lateReplies: Bool = false) {
        guard !broken else { return }
        // One exclusive access to `queue` for the whole batch: reading its members
        // one at a time from this class costs a run-time exclusivity check and a
        // copy of the struct (retaining its memory table) each time.
        if !processBatch(&queue, lateReplies: lateReplies) { broken = true }
    }

    /// Writes late replies, drains `queue` and notifies the driver; false when
    /// the ring indices are corrupt.
    private func processBatch(_ queue: inout SplitQueue, lateReplies: Bool) -> Bool {
        var notified = queue.nextUsed
        var healthy = true
        if lateReplies { _ = LateReplies.complete(replies.take(), on: &queue) }
        do {
            try drain(&queue, notified: &notified)
        } catch {
            healthy = false
            logger.error("queue \(queueIndex): ring indices corrupt, queue stopped until reset: \(error)")
        }
        notifyIfNeeded(&queue, since: &notified)
        return healthy
    }

    /// Signals the call eventfd if the driver wants to hear of the used entries
    /// pushed since `mark` (EVENT_IDX or the NO_INTERRUPT flag decide), then moves `mark`.
    private func notifyIfNeeded(_ queue: inout SplitQueue, since mark: inout UInt16) {
        guard queue.nextUsed != mark else { return }
        if queue.needsNotification(since: mark), let callFD { try? Sys.eventfdSignal(callFD) }
        mark = queue.nextUsed
    }

    private func logMalformed(_ error: ChainError) {
        malformedChains += 1
        // Rate limit: the first few, then one in 1024.
        if malformedChains <= 8 || malformedChains % 1024 == 0 {
            logger.warning("queue \(queueIndex): dropped a malformed chain (\(malformedChains) so far): \(error)")
        }
    }

    /// Takes every available chain off the ring and pushes its used entry: one
    /// chain at a time on this thread, or, with a pool and at least
    /// `poolThreshold` chains pending, in batches the pool runs while this thread
    /// waits. Only this thread writes the used ring. A chain its handler
    /// detached is not pushed here: `LateReplies` pushes it when its reply comes.
    /// With EVENT_IDX, re-arms avail_event and looks again so no kick is lost.
    /// Stops after `maxChainsPerDrain` chains with the rest still pending, which
    /// `run` finds by looking at the ring once it has looked for a stop request.
    private func drain(_ queue: inout SplitQueue, notified: inout UInt16) throws(RingError) {
        let chainRoom = SplitQueue.storageCapacity(queueSize: queue.size)
        let limit = SplitQueue.maxChainsPerDrain(queueSize: queue.size)
        var taken = 0
        // Decided once per drain, by how many chains wait now.
        let pooled = pool != nil && queue.pendingCount >= poolThreshold
        let room = pooled ? batch.chains.count : 1
        while true {
            // Return early only with chains pending: the caller sees them without a kick.
            // An empty ring goes on to re-arm avail_event below, or no kick would come.
            if taken >= limit && queue.pendingCount > 0 { return }
            batch.count = 0
            var offset = 0
            var ringError: RingError?
            fill: while batch.count < room && taken < limit && offset + chainRoom <= batch.segments.count {
                let result: PopResult
                do {
                    result = try queue.pop(into: UnsafeMutableBufferPointer(rebasing: batch.segments[offset ..< offset + chainRoom]))
                } catch {
                    // Still finish the chains already taken.
                    ringError = error
                    break fill
                }
                switch result {
                case .empty:
                    break fill
                case .malformed(let head, let e):
                    taken += 1
                    logMalformed(e)
                    queue.push(head: head, length: 0)
                case .chain(let head, let rs, let rb, let ws, let wb):
                    taken += 1
                    batch.chains[batch.count] = PendingChain(head: head, offset: offset, readableSegments: rs, readableBytes: rb,
                                                             writableSegments: ws, writableBytes: wb, used: nil)
                    batch.count += 1
                    offset += rs + ws
                }
            }
            if pooled, let pool {
                // Each chain is returned as soon as its pool job is done, in the order they
                // finish, and the driver is told whenever this thread has nothing more to
                // push: a slow chain holds up no other's reply.
                batch.runAll(on: pool, completed: { i in
                    if let used = batch.chains[i].used { queue.push(head: batch.chains[i].head, length: used) }
                }, idle: {
                    notifyIfNeeded(&queue, since: &notified)
                })
            } else {
                for i in 0..<batch.count {
                    batch.handle(i)
                    if let used = batch.chains[i].used { queue.push(head: batch.chains[i].head, length: used) }
                }
            }
            if let ringError { throw ringError }
            // A full batch (or full storage): more may wait, unless this drain took its share.
            let full = batch.count == room || offset + chainRoom > batch.segments.count
            if full && taken < limit { continue }
            if taken >= limit && queue.pendingCount > 0 { return }
            guard queue.rearmAndLookAgain() else { return }
        }
    }
}

/// How long a queue thread watches its ring after a batch before it sleeps on the
/// kick eventfd. A guest doing one request at a time posts the next within
/// microseconds, while waking a sleeping thread costs tens of them, so watching
/// pays; for a guest whose requests come further apart it only burns a core.
/// So the window starts at `maximum`, halves each time watching finds nothing and
/// doubles (up to `maximum`) each time it finds work; below `minimum` watching
/// stops, and is tried again for `minimum` once every `probeInterval` sleeps, so a
/// guest that becomes busy is noticed.
struct SpinPolicy {
    static let maximum: UInt64 = 40_000
    static let minimum: UInt64 = 5_000
    static let probeInterval = 16

    /// The window of the next look; 0 while watching is off.
    private(set) var window = SpinPolicy.maximum

    init() {}

    /// A policy whose watching starts off (for tests).
    static var off: SpinPolicy {
        var policy = SpinPolicy()
        policy.window = 0
        return policy
    }
    private var sleepsSinceProbe = 0

    /// How long to watch now (0: sleep at once).
    mutating func nextWindow() -> UInt64 {
        if window > 0 { return window }
        sleepsSinceProbe += 1
        guard sleepsSinceProbe >= Self.probeInterval else { return 0 }
        sleepsSinceProbe = 0
        return Self.minimum
    }

    /// After watching for `watched` nanoseconds: whether work came within it.
    mutating func record(found: Bool, window watched: UInt64) {
        if found {
            window = min(max(watched, Self.minimum) * 2, Self.maximum)
        } else {
            let half = watched / 2
            window = half < Self.minimum ? 0 : half
        }
    }
}
