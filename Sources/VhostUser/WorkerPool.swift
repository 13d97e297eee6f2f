#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Posix

/// Work a pool thread can run: item `index` of some batch.
protocol PoolJob: AnyObject, Sendable {
    func run(_ index: Int)
}

/// A fixed set of threads that run chain handlers for queues with many
/// chains pending. Jobs sit in a FIFO guarded by a mutex; the array keeps its
/// capacity, so submitting does not allocate once warm.
final class WorkerPool: @unchecked Sendable {
    private struct State: ~Copyable {
        var jobs: [(PoolJob, Int)] = []
        var head = 0
        var stopping = false
    }

    // The job FIFO; `available` counts the jobs (plus one post per thread at shutdown).
    private let state = Mutex(State())
    private let available = Sys.Semaphore()
    private var threads: [pthread_t] = []
    let size: Int

    init(size: Int) throws(Errno) {
        self.size = size
        state.withLock { $0.jobs.reserveCapacity(1024) }
        for _ in 0..<size {
            do {
                threads.append(try Sys.startThread { [self] in work() })
            } catch {
                shutdown()
                throw error
            }
        }
    }

    func submit(_ job: PoolJob, _ index: Int) {
        state.withLock { $0.jobs.append((job, index)) }
        available.post()
    }

    /// Stops the threads after the jobs already queued, and joins them.
    func shutdown() {
        state.withLock { $0.stopping = true }
        for _ in threads { available.post() }
        for t in threads { Sys.joinThread(t) }
        threads = []
    }

    private func work() {
        while true {
            available.wait()
            let next: (PoolJob, Int)? = state.withLock { s in
                guard s.head < s.jobs.count else { return nil }
                let job = s.jobs[s.head]
                s.head += 1
                // Emptied as soon as every job is taken, so a finished batch (and the
                // memory table it holds) is not kept alive by the FIFO.
                if s.head == s.jobs.count {
                    s.jobs.removeAll(keepingCapacity: true)
                    s.head = 0
                }
                return job
            }
            if let (job, index) = next {
                job.run(index)
            } else if state.withLock({ $0.stopping }) {
                return
            }
        }
    }
}

/// One chain of a batch handed to the pool, with its slice of the batch's iovecs.
struct PendingChain {
    var head: UInt16
    var offset: Int
    var readableSegments: Int
    var readableBytes: Int
    var writableSegments: Int
    var writableBytes: Int
    /// The used length once handled; nil while not handled, or when detached.
    var used: UInt32?
}

/// The chains one queue thread takes off its ring at once, the iovec storage
/// they are walked into (owned here, freed with the batch), and their results.
///
/// Synchronisation: the queue thread fills `chains` and either handles them
/// itself or submits them to the pool; each pool job writes only its own entry,
/// then appends its index to `finished` (under its mutex) and posts `chainDone`
/// once; the queue thread takes one index per post, so it reads each entry only
/// after that entry's job is done, and reuses the batch only after all are.
final class ChainBatch<Handler: VirtqueueHandler>: PoolJob, @unchecked Sendable {
    let handler: Handler
    let queueIndex: Int
    /// iovec storage shared by the batch's chains (each has its own slice).
    let segments: UnsafeMutableBufferPointer<iovec>
    let chains: UnsafeMutableBufferPointer<PendingChain>
    var count = 0
    /// Indices of chains whose pool job is done, in the order they finished.
    private struct Finished {
        var indices: [Int] = []
        var head = 0
    }
    private let finished: Mutex<Finished>
    private let chainDone = Sys.Semaphore()
    /// Where detached chains' replies go, and the memory their buffers lie in
    /// (fixed for the queue thread's life: a new table restarts it).
    let replies: LateReplies
    let memory: GuestMemory
    /// The queue's dirty log while the frontend migrates (fixed for the thread's life too:
    /// a new log restarts it).
    let dirtyLog: QueueDirtyLog?

    init(handler: Handler, queueIndex: Int, queueSize: Int, maxChains: Int, replies: LateReplies, memory: GuestMemory,
         dirtyLog: QueueDirtyLog? = nil) {
        self.handler = handler
        self.dirtyLog = dirtyLog
        self.queueIndex = queueIndex
        self.replies = replies
        self.memory = memory
        // Room for one chain of the longest legal length plus many short ones.
        segments = .allocate(capacity: SplitQueue.storageCapacity(queueSize: queueSize) + 1024)
        chains = .allocate(capacity: max(maxChains, 1))
        var f = Finished()
        f.indices.reserveCapacity(max(maxChains, 1))
        finished = Mutex(f)
    }

    deinit {
        segments.deallocate()
        chains.deallocate()
    }

    /// Handles chain `index` on the calling thread.
    @inline(__always)
    func handle(_ index: Int) {
        guard index < count, let base = segments.baseAddress else { return }
        let c = chains[index]
        chains[index].used = handler.handleChain(queueIndex: queueIndex, segments: base + c.offset,
                                                 readableSegments: c.readableSegments, readableBytes: c.readableBytes,
                                                 writableSegments: c.writableSegments, writableBytes: c.writableBytes,
                                                 detachTarget: DetachTarget(head: c.head, replies: replies, memory: memory),
                                                 dirtyLog: dirtyLog)
    }

    /// A pool thread's job: handle chain `index`, then tell the queue thread.
    func run(_ index: Int) {
        handle(index)
        finished.withLock { $0.indices.append(index) }
        chainDone.post()
    }

    /// Runs the `count` chains on `pool`, calling `completed` on this thread with
    /// each chain's index as soon as its job is done (in the order they finish),
    /// and `idle` each time no finished chain is waiting before it sleeps for the
    /// next; returns when all are done.
    func runAll(on pool: WorkerPool, completed: (Int) -> Void, idle: () -> Void) {
        guard count > 0 else { return }
        finished.withLock { f in
            f.indices.removeAll(keepingCapacity: true)
            f.head = 0
        }
        for i in 0..<count { pool.submit(self, i) }
        for _ in 0..<count {
            if !chainDone.tryWait() {
                idle()
                chainDone.wait()
            }
            let index = finished.withLock { f -> Int in
                let i = f.indices[f.head]
                f.head += 1
                return i
            }
            completed(index)
        }
    }
}
