#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

/// Shutdown signals delivered as a readable descriptor instead of handlers.
public enum Signals {
    /// The signals that stop the daemon cleanly. SIGHUP is one of them, as in the C
    /// daemon: there is no configuration or log file to reopen (logs go to stderr or
    /// syslog), and a daemon whose terminal or supervisor hung up should not serve on.
    public static let stopSignals: [Int32] = [SIGTERM, SIGINT, SIGHUP]

    /// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread, ignores SIGPIPE
    /// (a frontend that goes away must become EPIPE, not a dead daemon), and
    /// returns a signalfd that becomes readable on any of them.
    ///
    /// Call it before any thread exists: threads inherit the mask, so no other
    /// thread can take the signal instead of the signalfd.
    public static func blockShutdownSignals() throws(Errno) -> Int32 {
        try ignore(SIGPIPE)
        var mask = sigset_t()
        sigemptyset(&mask)
        for sig in stopSignals { sigaddset(&mask, sig) }
        try blockSignals(mask)
        return try signalfd(mask)
    }

    /// "SIGTERM" for 15, and so on; the number for signals without a name here.
    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: return "SIGTERM"
        case SIGINT: return "SIGINT"
        case SIGHUP: return "SIGHUP"
        case SIGUSR1: return "SIGUSR1"
        case SIGQUIT: return "SIGQUIT"
        case SIGKILL: return "SIGKILL"
        default: return "signal \(signal)"
        }
    }

    /// The corresponding C function is `pthread_sigmask` (with SIG_BLOCK).
    public static func blockSignals(_ mask: sigset_t) throws(Errno) {
        var mask = mask
        let rc = pthread_sigmask(SIG_BLOCK, &mask, nil)
        if rc != 0 { throw Errno(rc) }
    }

    /// The corresponding C function is `signalfd`.
    public static func signalfd(_ mask: sigset_t) throws(Errno) -> Int32 {
        var mask = mask
        return try checked(cvfs_signalfd(&mask))
    }

    /// The corresponding C function is `sigaction` (with SIG_IGN).
    public static func ignore(_ signal: Int32) throws(Errno) {
        _ = try checked(cvfs_ignore_signal(signal))
    }

    /// Reads one record from a signalfd and returns the signal number
    /// (the corresponding C function is `read`).
    public static func readSignal(_ fd: Int32) throws(Errno) -> Int32 {
        // struct signalfd_siginfo is 128 bytes; ssi_signo is its first u32.
        return try withUnsafeTemporaryAllocation(byteCount: 128, alignment: 8) { buffer throws(Errno) -> Int32 in
            let size = Int(CVFS_SIGNALFD_SIGINFO_SIZE)
            guard size <= buffer.count, let base = buffer.baseAddress else { throw Errno.invalidArgument }
            let n = try retryingEINTR { Glibc.read(fd, base, size) }
            guard n >= 4 else { throw Errno.ioError }
            return Int32(bitPattern: base.loadUnaligned(as: UInt32.self))
        }
    }
}
