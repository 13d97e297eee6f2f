#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A POSIX error number. Every system call wrapper throws this.
public struct Errno: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32

    @inlinable public init(rawValue: Int32) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: Int32) { self.rawValue = rawValue }

    /// The calling thread's current `errno`.
    @inlinable public static var current: Errno { Errno(rawValue: errno) }

    public var description: String { String(cString: strerror(rawValue)) }

    public static let permissionDenied = Errno(EPERM)      // EPERM
    public static let noEntry = Errno(ENOENT)
    public static let interrupted = Errno(EINTR)
    public static let ioError = Errno(EIO)
    public static let badFileDescriptor = Errno(EBADF)
    public static let wouldBlock = Errno(EAGAIN)
    public static let noMemory = Errno(ENOMEM)
    public static let accessDenied = Errno(EACCES)       // EACCES
    public static let badAddress = Errno(EFAULT)
    public static let busy = Errno(EBUSY)
    public static let exists = Errno(EEXIST)
    public static let crossDevice = Errno(EXDEV)
    public static let notDirectory = Errno(ENOTDIR)
    public static let isDirectory = Errno(EISDIR)
    public static let invalidArgument = Errno(EINVAL)
    public static let tooManyOpenFiles = Errno(EMFILE)
    public static let noSpace = Errno(ENOSPC)
    public static let notTTY = Errno(ENOTTY)
    public static let fileTooLarge = Errno(EFBIG)
    public static let readOnlyFileSystem = Errno(EROFS)
    public static let range = Errno(ERANGE)
    public static let nameTooLong = Errno(ENAMETOOLONG)
    public static let noSys = Errno(ENOSYS)
    public static let notEmpty = Errno(ENOTEMPTY)
    public static let loop = Errno(ELOOP)
    public static let noData = Errno(ENODATA)
    public static let overflow = Errno(EOVERFLOW)
    public static let notSupported = Errno(EOPNOTSUPP)
    public static let protocolError = Errno(EPROTO)
    public static let stale = Errno(ESTALE)
    public static let tooBig = Errno(E2BIG)
    public static let timedOut = Errno(ETIMEDOUT)
    public static let connectionReset = Errno(ECONNRESET)
    public static let deadlock = Errno(EDEADLK)
    public static let noLocks = Errno(ENOLCK)
}

#if DEBUG
/// Runs `body` until it does not fail with EINTR; a result of -1 becomes the thread's errno.
/// Debug builds first ask `FaultInjection` about the calling wrapper (`#function`).
@inlinable
public func retryingEINTR<T: FixedWidthInteger>(_ wrapper: StaticString = #function, _ body: () -> T) throws(Errno) -> T {
    while true {
        var result: T
        if FaultInjection.isArmed, let fault = FaultInjection.consult(wrapper) {
            switch fault {
            case .fail(let e): throw e
            case .interrupt: continue
            case .shorten(let limit):
                result = body()
                if result > limit { result = T(truncatingIfNeeded: limit) }
            }
        } else {
            result = body()
        }
        if result != -1 { return result }
        let e = errno
        if e == EINTR { continue }
        throw Errno(rawValue: e)
    }
}

/// Converts a -1 result into the thread's errno, without retrying.
/// Debug builds: a fault injected for the calling wrapper replaces the result; the
/// call itself has been made by then, so only `.shorten` should be used for calls
/// with side effects.
@inlinable
public func checked<T: FixedWidthInteger>(_ result: T, _ wrapper: StaticString = #function) throws(Errno) -> T {
    if FaultInjection.isArmed, let fault = FaultInjection.consult(wrapper) {
        switch fault {
        case .fail(let e): throw e
        case .interrupt: throw Errno.interrupted
        case .shorten(let limit): if result > limit { return T(truncatingIfNeeded: limit) }
        }
    }
    if result == -1 { throw Errno(rawValue: errno) }
    return result
}
#else
/// Runs `body` until it does not fail with EINTR; a result of -1 becomes the thread's errno.
@inlinable
public func retryingEINTR<T: FixedWidthInteger>(_ body: () -> T) throws(Errno) -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let e = errno
        if e == EINTR { continue }
        throw Errno(rawValue: e)
    }
}

/// Converts a -1 result into the thread's errno, without retrying.
@inlinable
public func checked<T: FixedWidthInteger>(_ result: T) throws(Errno) -> T {
    if result == -1 { throw Errno(rawValue: errno) }
    return result
}
#endif
