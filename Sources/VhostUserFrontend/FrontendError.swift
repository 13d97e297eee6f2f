import Posix

/// Why a frontend operation failed. Each case names the step.
public enum FrontendError: Error, Equatable, CustomStringConvertible {
    /// A system call failed during `step`.
    case system(step: String, Errno)
    /// The backend's reply broke the vhost-user protocol (wrong request, short payload, nack).
    case protocolViolation(String)
    /// The backend closed the connection.
    case disconnected
    /// Nothing arrived within the allowed time.
    case timedOut(String)
    /// The request cannot be placed (ring full, guest memory exhausted, argument out of range).
    case noRoom(String)
    /// The daemon process ended or never got ready; the text says how and quotes its log.
    case daemonFailed(String)
    /// A FUSE reply carried an error (a negative errno, as on the wire).
    case fuse(opcode: UInt32, error: Int32)

    public var description: String {
        switch self {
        case .system(let step, let errno): return "\(step): \(errno)"
        case .protocolViolation(let what): return "vhost-user protocol violation: \(what)"
        case .disconnected: return "backend closed the connection"
        case .timedOut(let what): return "timed out waiting for \(what)"
        case .noRoom(let what): return "no room: \(what)"
        case .daemonFailed(let what): return what
        case .fuse(let opcode, let error): return "FUSE opcode \(opcode) failed with errno \(-error)"
        }
    }
}

@inline(__always)
func attempt<T>(_ step: String, _ body: () throws(Errno) -> T) throws(FrontendError) -> T {
    do { return try body() } catch { throw FrontendError.system(step: step, error) }
}
