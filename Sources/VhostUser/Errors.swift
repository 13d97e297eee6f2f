import Posix

/// What went wrong on a vhost-user connection. Protocol cases name the
/// frontend's mistake; the backend logs them and closes the connection.
public enum VhostUserError: Error, Equatable, CustomStringConvertible {
    // Framing and decoding.
    case badVersion(flags: UInt32)
    case unknownRequest(UInt32)
    case payloadSize(request: String, expected: String, actual: Int)
    case payloadTooLarge(request: UInt32, size: UInt32)
    case fdCount(request: String, expected: String, actual: Int)
    case fdsTruncated
    case tooManyRegions(count: Int, limit: Int)
    case queueIndexOutOfRange(request: String, index: UInt32, queueCount: Int)
    case badQueueSize(queue: Int, size: UInt32)
    // State the frontend got wrong.
    case featuresNotOffered(request: String, acked: UInt64, offered: UInt64)
    case ringOutsideMemory(queue: Int, ring: String, address: UInt64, length: Int)
    case ringMisaligned(queue: Int, ring: String, address: UInt64)
    case badRegion(String)
    case regionNotFound(guestAddress: UInt64, size: UInt64)
    case mapFailed(Errno)
    case guardFailed(Errno)
    case notAnEventFD(request: String, queue: Int, kind: String)
    case guestMemoryFault
    case noMemoryTable(request: String)
    case badLog(String)
    case deviceState(String)
    // Local failures.
    case socket(Errno)
    case truncatedMessage
    case shutdownMidMessage
    case thread(Errno)

    public var description: String {
        switch self {
        case .badVersion(let flags):
            return "message header has version \(flags & 3), expected 1"
        case .unknownRequest(let r):
            return "unknown request \(r)"
        case .payloadSize(let request, let expected, let actual):
            return "\(request): payload is \(actual) bytes, expected \(expected)"
        case .payloadTooLarge(let request, let size):
            return "request \(request): payload of \(size) bytes is larger than any valid message"
        case .fdCount(let request, let expected, let actual):
            return "\(request): \(actual) file descriptors attached, expected \(expected)"
        case .fdsTruncated:
            return "the kernel truncated the attached file descriptors (too many sent)"
        case .tooManyRegions(let count, let limit):
            return "memory table has \(count) regions, at most \(limit) are allowed"
        case .queueIndexOutOfRange(let request, let index, let count):
            return "\(request): queue index \(index) out of range (the device has \(count) queues)"
        case .badQueueSize(let queue, let size):
            return "queue \(queue): size \(size) is not a power of two between 1 and the maximum"
        case .featuresNotOffered(let request, let acked, let offered):
            return "\(request): frontend acked 0x\(String(acked, radix: 16)), only 0x\(String(offered, radix: 16)) was offered"
        case .ringOutsideMemory(let queue, let ring, let address, let length):
            return "queue \(queue): \(ring) at 0x\(String(address, radix: 16)) (\(length) bytes) is outside the memory table"
        case .ringMisaligned(let queue, let ring, let address):
            return "queue \(queue): \(ring) at 0x\(String(address, radix: 16)) is misaligned"
        case .badRegion(let why):
            return "bad memory region: \(why)"
        case .regionNotFound(let gpa, let size):
            return "no memory region at guest address 0x\(String(gpa, radix: 16)) of size \(size) to remove"
        case .mapFailed(let e):
            return "cannot map a guest memory region: \(e)"
        case .guardFailed(let e):
            return "cannot guard a guest memory region against SIGBUS: \(e)"
        case .notAnEventFD(let request, let queue, let kind):
            return "\(request): queue \(queue): the file descriptor is \(kind), not an eventfd"
        case .guestMemoryFault:
            return "guest memory became inaccessible (the frontend shrank or truncated a memory region's file after sharing it)"
        case .noMemoryTable(let request):
            return "\(request) before any memory table"
        case .badLog(let why):
            return "SET_LOG_BASE: bad dirty log: \(why)"
        case .deviceState(let why):
            return "device state transfer: \(why)"
        case .socket(let e):
            return "socket error: \(e)"
        case .truncatedMessage:
            return "connection closed in the middle of a message"
        case .shutdownMidMessage:
            return "shutdown requested while the frontend was in the middle of a message"
        case .thread(let e):
            return "cannot start a queue thread: \(e)"
        }
    }
}
