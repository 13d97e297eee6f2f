#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

extension Sys {
    /// Waits for an open-file-description record lock. Unlike the other wrappers,
    /// a signal ends the wait with `EINTR` instead of a retry: that is how a
    /// waiting thread is told to give up. The corresponding C function is
    /// `fcntl` (with `F_OFD_SETLKW`).
    public static func fcntlLockWaitInterruptibly(_ fd: Int32, _ lock: inout Glibc.flock) throws(Errno) {
        _ = try checked(cvfs_fcntl_lock(fd, CVFS_F_OFD_SETLKW, &lock))
    }

    /// Waits for a BSD lock (`operation` without `LOCK_NB`); a signal ends the wait
    /// with `EINTR`. The corresponding C function is `flock`.
    public static func flockWaitInterruptibly(_ fd: Int32, _ operation: Int32) throws(Errno) {
        _ = try checked(cvfs_flock(fd, operation))
    }

    /// Sends `signal` to one thread of this process. The corresponding C function is `pthread_kill`.
    public static func signalThread(_ thread: pthread_t, _ signal: Int32) throws(Errno) {
        let rc = pthread_kill(thread, signal)
        if rc != 0 { throw Errno(rc) }
    }

    /// The calling thread. The corresponding C function is `pthread_self`.
    public static func currentThread() -> pthread_t { pthread_self() }
}

extension Signals {
    /// Makes `signal` a wake-up call: its handler does nothing and is installed
    /// without `SA_RESTART`, so the signal only makes a blocking call in the
    /// thread it is sent to return `EINTR`. The corresponding C function is `sigaction`.
    public static func installWakeup(_ signal: Int32) throws(Errno) {
        _ = try checked(cvfs_install_wakeup_handler(signal))
    }
}

extension Sys {
    /// Starts a detached thread running `body` (nobody joins it; it ends with `body`).
    /// The corresponding C functions are `pthread_create` and `pthread_detach`.
    public static func startDetachedThread(_ body: @escaping () -> Void) throws(Errno) {
        let thread = try startThread(body)
        let rc = pthread_detach(thread)
        if rc != 0 { throw Errno(rc) }
    }
}
