#if DEBUG
import Synchronization

/// A fault for a system call wrapper to act out (debug builds only, for tests).
public enum InjectedFault: Sendable, Equatable {
    /// The call is not made and fails with this errno.
    case fail(Errno)
    /// The call is not made and fails with EINTR: a wrapper that retries EINTR asks
    /// the hook again, one that does not throws it.
    case interrupt
    /// The call is made, then reports at most this many (a short read or write).
    case shorten(Int)
}

/// Test-only fault injection: every wrapper built on `retryingEINTR` or `checked`
/// asks the installed hook, by the wrapper's name, whether to misbehave. The
/// name is the Swift function name, e.g. `openat(_:_:_:_:)`, `preadv(_:_:_:)`.
/// Compiled into debug builds only: release builds have neither this type nor
/// the question in the wrappers. One hook for the process; tests that install
/// it must not run concurrently with other users of the wrappers they fault.
public enum FaultInjection {
    private static let armed = Atomic<Bool>(false)
    private static let hook = Mutex<(@Sendable (String) -> InjectedFault?)?>(nil)

    /// Installs `hook`, replacing any other.
    public static func install(_ hook: @escaping @Sendable (_ wrapper: String) -> InjectedFault?) {
        self.hook.withLock { $0 = hook }
        armed.store(true, ordering: .releasing)
    }

    /// Removes the hook: every wrapper behaves again.
    public static func remove() {
        armed.store(false, ordering: .releasing)
        hook.withLock { $0 = nil }
    }

    /// Whether a hook is installed (the wrappers' fast path).
    @usableFromInline static var isArmed: Bool { armed.load(ordering: .acquiring) }

    /// The fault for the wrapper named `wrapper`, if the hook wants one.
    @usableFromInline static func consult(_ wrapper: StaticString) -> InjectedFault? {
        guard let current = hook.withLock({ $0 }) else { return nil }
        return current(wrapper.description)
    }
}
#endif
