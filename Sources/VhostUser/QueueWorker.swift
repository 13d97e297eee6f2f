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

/// The thread serving one started queue: waits on its kick eventfd and a stop
/// eventfd, drains every available chain through the handler and signals the
/// call eventfd once per batch.
///
/// Synchronisation: between `start()` and the join in `stop()` only the queue
/// thread touches `queue`, `broken` and `malformedChains`; the backend reads
/// them after the join, which orders the accesses.
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
    /// With a pool: batches of at least `poolThreshold` pending chains go to it.
    private let pool: WorkerPool?
    private let poolThreshold: Int
    private let batch: ChainBatch<Handler>?

    init(queueIndex: Int, queue: SplitQueue, kickFD: Int32, callFD: Int32?,
         handler: Handler, logger: Logger, pool: WorkerPool? = nil, poolThreshold: Int = 4) throws(Errno) {
        self.queueIndex = queueIndex
        self.queue = queue
        self.kickFD = kickFD
        self.callFD = callFD
        self.handler = handler
        self.logger = logger
        self.stopFD = try Sys.eventfd()
        self.pool = pool
        self.poolThreshold = max(poolThreshold, 1)
        if let pool {
            // Enough chains per batch to keep every pool thread busy twice over.
            batch = ChainBatch(handler: handler, queueIndex: queueIndex, queueSize: queue.size,
                               maxChains: min(2 * pool.size, queue.size), dirtyLog: queue.dirtyLog)
        } else {
            batch = nil
        }
    }

    deinit {
        Sys.close(stopFD)
        queue.storage.deallocate()
    }

    func start() throws(Errno) {
        thread = try Sys.startThread { [self] in run() }
    }

    /// Asks the thread to finish its batch and exit, then joins it.
    func stop() {
        guard let thread else { return }
        try? Sys.eventfdSignal(stopFD)
        pthread_join(thread, nil)
        self.thread = nil
    }

    /// After a batch the thread keeps watching the ring this long before it
    /// sleeps: a guest doing one request at a time posts the next within
    /// microseconds, while waking a sleeping thread through the kick eventfd costs
    /// tens of them. Bounded, so an idle queue costs nothing.
    static var spinNanoseconds: UInt64 { 40_000 }

    /// True when chains became available within the spin window.
    private func spinUntilAvailable() -> Bool {
        guard !broken else { return false }
        let deadline = Sys.monotonicNanoseconds() &+ Self.spinNanoseconds
        repeat {
            if queue.pendingCount > 0 { return true }
            // Leave the CPU to the frontend if it shares ours.
            sched_yield()
        } while Sys.monotonicNanoseconds() < deadline
        return false
    }

    private func run() {
        // Chains may already be waiting (a queue restarted after a table change).
        processBatch()
        while true {
            // With work found by spinning, only look (timeout 0) whether a stop came.
            let found = spinUntilAvailable()
            let (kick, stop): (Int16, Int16)
            do {
                (kick, stop) = try Sys.pollPair(kickFD, stopFD, timeoutMilliseconds: found ? 0 : -1)
            } catch {
                logger.error("queue \(queueIndex): poll failed: \(error)")
                return
            }
            if stop != 0 { return }
            if kick & Int16(POLLNVAL | POLLERR | POLLHUP) != 0 {
                logger.error("queue \(queueIndex): kick fd failed; stopping the queue")
                return
            }
            if kick & Int16(POLLIN) != 0 {
                _ = try? Sys.eventfdDrain(kickFD)
            }
            if found || kick & Int16(POLLIN) != 0 {
                processBatch()
            }
        }
    }

    func processBatch() {
        guard !broken else { return }
        // One exclusive access to `queue` for the whole batch: reading its members
        // one at a time from this class costs a run-time exclusivity check and a
        // copy of the struct (retaining its memory table) each time.
        if !processBatch(&queue) { broken = true }
    }

    /// Drains `queue` and notifies the driver; false when the ring indices are corrupt.
    private func processBatch(_ queue: inout SplitQueue) -> Bool {
        let before = queue.nextUsed
        var healthy = true
        do {
            if let pool, let batch, queue.pendingCount >= poolThreshold {
                try drain(&queue, through: pool, batch)
            } else {
                _ = try queue.drain(handler: handler, queueIndex: queueIndex) { logMalformed($0) }
            }
        } catch {
            healthy = false
            logger.error("queue \(queueIndex): ring indices corrupt, queue stopped until reset: \(error)")
        }
        if queue.nextUsed != before, queue.needsNotification(since: before), let callFD {
            try? Sys.eventfdSignal(callFD)
        }
        return healthy
    }

    private func logMalformed(_ error: ChainError) {
        malformedChains += 1
        // Rate limit: the first few, then one in 1024.
        if malformedChains <= 8 || malformedChains % 1024 == 0 {
            logger.warning("queue \(queueIndex): dropped a malformed chain (\(malformedChains) so far): \(error)")
        }
    }

    /// Many chains pending: hand them to the pool in batches, wait for each
    /// batch, then push its used entries in order from this thread (so only
    /// this thread ever writes the used ring).
    private func drain(_ queue: inout SplitQueue, through pool: WorkerPool, _ batch: ChainBatch<Handler>) throws(RingError) {
        let chainRoom = SplitQueue.storageCapacity(queueSize: queue.size)
        // Bounded like `SplitQueue.drain`: chains still pending after one ring's worth
        // are found by `run` once it has looked for a stop request.
        let limit = SplitQueue.maxChainsPerDrain(queueSize: queue.size)
        var taken = 0
        while true {
            if taken >= limit && queue.pendingCount > 0 { return }
            batch.count = 0
            var offset = 0
            var ringError: RingError?
            fill: while batch.count < batch.chains.count && offset + chainRoom <= batch.segments.count {
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
                    logMalformed(e)
                    queue.push(head: head, length: 0)
                case .chain(let head, let rs, let rb, let ws, let wb):
                    batch.chains[batch.count] = PendingChain(head: head, offset: offset, readableSegments: rs, readableBytes: rb,
                                                             writableSegments: ws, writableBytes: wb, used: 0)
                    batch.count += 1
                    offset += rs + ws
                }
            }
            batch.runAll(on: pool)
            taken += batch.count
            for i in 0..<batch.count {
                queue.push(head: batch.chains[i].head, length: batch.chains[i].used)
            }
            if let ringError { throw ringError }
            if batch.count == batch.chains.count || offset + chainRoom > batch.segments.count { continue }
            guard queue.rearmAndLookAgain() else { return }
        }
    }
}
