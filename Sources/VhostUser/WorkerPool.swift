#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import Posix

/// Work a pool thread can run: item `index` of some batch.
protocol PoolJob: AnyObject, Sendable {
    func run(_ index: Int)
}

/// A POSIX counting semaphore at a stable address.
final class Semaphore: @unchecked Sendable {
    // sem_t is designed for concurrent use from any thread.
    private let sem = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)
    init() { sem_init(sem, 0, 0) }
    deinit {
        sem_destroy(sem)
        sem.deallocate()
    }
    func post() { sem_post(sem) }
    /// Waits for one post, retrying when a signal interrupts the wait.
    func wait() {
        while sem_wait(sem) != 0 && errno == EINTR {}
    }
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
    private let available = Semaphore()
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
        state.withLock { s in
            if s.head == s.jobs.count {
                s.jobs.removeAll(keepingCapacity: true)
                s.head = 0
            }
            s.jobs.append((job, index))
        }
        available.post()
    }

    /// Stops the threads after the jobs already queued, and joins them.
    func shutdown() {
        state.withLock { $0.stopping = true }
        for _ in threads { available.post() }
        for t in threads { pthread_join(t, nil) }
        threads = []
    }

    private func work() {
        while true {
            available.wait()
            let next: (PoolJob, Int)? = state.withLock { s in
                guard s.head < s.jobs.count else { return nil }
                let job = s.jobs[s.head]
                s.head += 1
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
    var used: UInt32
}

/// The chains one queue thread hands to the pool at once, and their results.
///
/// Synchronisation: the queue thread fills `chains` before submitting; each
/// pool job writes only its own entry; the queue thread reads the results after
/// `done` is posted by the job that brings `remaining` to zero.
final class ChainBatch<Handler: VirtqueueHandler>: PoolJob, @unchecked Sendable {
    let handler: Handler
    let queueIndex: Int
    /// iovec storage shared by the batch's chains (each has its own slice).
    let segments: UnsafeMutableBufferPointer<iovec>
    let chains: UnsafeMutableBufferPointer<PendingChain>
    var count = 0
    let remaining = Atomic<Int>(0)
    let done = Semaphore()
    /// The queue's dirty log while the frontend migrates.
    let dirtyLog: QueueDirtyLog?

    init(handler: Handler, queueIndex: Int, queueSize: Int, maxChains: Int, dirtyLog: QueueDirtyLog? = nil) {
        self.handler = handler
        self.dirtyLog = dirtyLog
        self.queueIndex = queueIndex
        // Room for one chain of the longest legal length plus many short ones.
        segments = .allocate(capacity: SplitQueue.storageCapacity(queueSize: queueSize) + 1024)
        chains = .allocate(capacity: max(maxChains, 1))
    }

    deinit {
        segments.deallocate()
        chains.deallocate()
    }

    func run(_ index: Int) {
        guard index < count, let base = segments.baseAddress else { return }
        let c = chains[index]
        chains[index].used = handler.handleChain(queueIndex: queueIndex, segments: base + c.offset,
                                                 readableSegments: c.readableSegments, readableBytes: c.readableBytes,
                                                 writableSegments: c.writableSegments, writableBytes: c.writableBytes,
                                                 dirtyLog: dirtyLog)
        if remaining.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            done.post()
        }
    }

    /// Runs the `count` chains on `pool` and waits until all are handled.
    func runAll(on pool: WorkerPool) {
        guard count > 0 else { return }
        remaining.store(count, ordering: .releasing)
        for i in 0..<count { pool.submit(self, i) }
        done.wait()
    }
}
