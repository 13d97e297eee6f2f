#if canImport(Glibc)
import Glibc
#endif

extension Sys {
    /// Starts a joinable thread running `body`; the caller joins it with `pthread_join`.
    /// The corresponding C function is `pthread_create`.
    public static func startThread(_ body: @escaping () -> Void) throws(Errno) -> pthread_t {
        // The closure crosses into the new thread through pthread_create's one pointer;
        // the new thread takes over the box's retain.
        final class Box {
            let body: () -> Void
            init(_ body: @escaping () -> Void) { self.body = body }
        }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<Box>.fromOpaque(raw).takeRetainedValue().body()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(context).release()
            throw Errno(rc)
        }
        return thread
    }

    /// Waits for `thread` to end. The corresponding C function is `pthread_join`.
    public static func joinThread(_ thread: pthread_t) {
        _ = pthread_join(thread, nil)
    }

    /// Gives the CPU to another runnable thread. The corresponding C function is `sched_yield`.
    public static func yieldThread() {
        _ = sched_yield()
    }

    /// A counting semaphore between threads of this process.
    ///
    /// Synchronisation: `sem_t` is made for concurrent use from any thread; the class
    /// only owns its storage.
    public final class Semaphore: @unchecked Sendable {
        private let sem = UnsafeMutablePointer<sem_t>.allocate(capacity: 1)

        /// The corresponding C function is `sem_init` (not shared between processes).
        public init(value: UInt32 = 0) { sem_init(sem, 0, value) }

        deinit {
            sem_destroy(sem)
            sem.deallocate()
        }

        /// The corresponding C function is `sem_post`.
        public func post() { _ = sem_post(sem) }

        /// Waits until the count is positive and takes one; EINTR is retried.
        /// The corresponding C function is `sem_wait`.
        public func wait() {
            while sem_wait(sem) != 0 && errno == EINTR {}
        }

        /// Takes one if the count is positive; false at once otherwise. EINTR is retried.
        /// The corresponding C function is `sem_trywait`.
        public func tryWait() -> Bool {
            while true {
                if sem_trywait(sem) == 0 { return true }
                if errno != EINTR { return false }
            }
        }
    }
}
