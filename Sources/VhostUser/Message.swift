#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// A vhost-user request code (QEMU docs/interop/vhost-user.rst).
public enum RequestCode: UInt32, Sendable, CaseIterable {
    case getFeatures = 1
    case setFeatures = 2
    case setOwner = 3
    case resetOwner = 4
    case setMemTable = 5
    case setLogBase = 6
    case setLogFD = 7
    case setVringNum = 8
    case setVringAddr = 9
    case setVringBase = 10
    case getVringBase = 11
    case setVringKick = 12
    case setVringCall = 13
    case setVringErr = 14
    case getProtocolFeatures = 15
    case setProtocolFeatures = 16
    case getQueueNum = 17
    case setVringEnable = 18
    case setBackendReqFD = 21
    case getConfig = 24
    case setConfig = 25
    case resetDevice = 34
    case getMaxMemSlots = 36
    case addMemReg = 37
    case remMemReg = 38
    case setStatus = 39
    case getStatus = 40
    case setDeviceStateFD = 42
    case checkDeviceState = 43

    public var name: String {
        switch self {
        case .getFeatures: return "GET_FEATURES"
        case .setFeatures: return "SET_FEATURES"
        case .setOwner: return "SET_OWNER"
        case .resetOwner: return "RESET_OWNER"
        case .setMemTable: return "SET_MEM_TABLE"
        case .setLogBase: return "SET_LOG_BASE"
        case .setLogFD: return "SET_LOG_FD"
        case .setVringNum: return "SET_VRING_NUM"
        case .setVringAddr: return "SET_VRING_ADDR"
        case .setVringBase: return "SET_VRING_BASE"
        case .getVringBase: return "GET_VRING_BASE"
        case .setVringKick: return "SET_VRING_KICK"
        case .setVringCall: return "SET_VRING_CALL"
        case .setVringErr: return "SET_VRING_ERR"
        case .getProtocolFeatures: return "GET_PROTOCOL_FEATURES"
        case .setProtocolFeatures: return "SET_PROTOCOL_FEATURES"
        case .getQueueNum: return "GET_QUEUE_NUM"
        case .setVringEnable: return "SET_VRING_ENABLE"
        case .setBackendReqFD: return "SET_BACKEND_REQ_FD"
        case .getConfig: return "GET_CONFIG"
        case .setConfig: return "SET_CONFIG"
        case .resetDevice: return "RESET_DEVICE"
        case .getMaxMemSlots: return "GET_MAX_MEM_SLOTS"
        case .addMemReg: return "ADD_MEM_REG"
        case .remMemReg: return "REM_MEM_REG"
        case .setStatus: return "SET_STATUS"
        case .getStatus: return "GET_STATUS"
        case .setDeviceStateFD: return "SET_DEVICE_STATE_FD"
        case .checkDeviceState: return "CHECK_DEVICE_STATE"
        }
    }
}

/// A decoded request. Any fd it carries is owned by whoever holds the value.
public enum Request: Equatable, Sendable {
    case getFeatures
    case setFeatures(UInt64)
    case setOwner
    case resetOwner
    case getProtocolFeatures
    case setProtocolFeatures(UInt64)
    case getQueueNum
    case setMemTable([MemoryRegionDescription], fds: [Int32])
    case getMaxMemSlots
    case addMemReg(MemoryRegionDescription, fd: Int32)
    case remMemReg(MemoryRegionDescription)
    case setVringNum(queue: Int, size: Int)
    case setVringAddr(queue: Int, VringAddresses)
    case setVringBase(queue: Int, base: UInt16)
    case getVringBase(queue: Int)
    case setVringKick(queue: Int, fd: Int32?)
    case setVringCall(queue: Int, fd: Int32?)
    case setVringErr(queue: Int, fd: Int32?)
    case setVringEnable(queue: Int, enabled: Bool)
    case setLogBase(size: UInt64, offset: UInt64, fd: Int32)
    case setLogFD(Int32)
    case getConfig(offset: UInt32, size: UInt32, flags: UInt32)
    case setConfig(offset: UInt32, size: UInt32, flags: UInt32)
    case setBackendReqFD(Int32)
    case resetDevice
    case setStatus(UInt8)
    case getStatus
    /// Migration: `save` means we write our state into `fd`, otherwise we read it from `fd`.
    case setDeviceStateFD(save: Bool, phase: UInt32, fd: Int32)
    case checkDeviceState

    /// Every fd the request carries (to close when it is not kept).
    public var fds: [Int32] {
        switch self {
        case .setMemTable(_, let fds): return fds
        case .addMemReg(_, let fd), .setLogBase(_, _, let fd), .setLogFD(let fd), .setBackendReqFD(let fd),
             .setDeviceStateFD(_, _, let fd):
            return [fd]
        case .setVringKick(_, let fd), .setVringCall(_, let fd), .setVringErr(_, let fd):
            return fd.map { [$0] } ?? []
        default:
            return []
        }
    }
}

/// One message: the request, and whether the frontend asked for an ack.
public struct Message: Equatable, Sendable {
    public var code: RequestCode
    public var request: Request
    public var needsReply: Bool
}

/// Reads and writes vhost-user messages on a connected stream socket.
public struct MessageCodec: Sendable {
    public static let headerSize = 12
    /// The largest payload any request we accept carries (GET/SET_CONFIG: 12 + 256).
    public static let maxPayload = 4096
    /// Regions in one SET_MEM_TABLE message.
    public static let maxRegionsPerTable = Int(CVFS_VHOST_USER_MAX_RAM_SLOTS)
    static let maxVringSize = 32768

    /// Number of queues the device has: indices at or above it are rejected.
    public var queueCount: Int
    /// Largest accepted SET_VRING_NUM (at most 32768).
    public var maxQueueSize: Int

    public init(queueCount: Int, maxQueueSize: Int) {
        self.queueCount = queueCount
        self.maxQueueSize = min(maxQueueSize, MessageCodec.maxVringSize)
    }

    /// Reads one message; nil when the peer closed the connection between messages.
    /// On error every received fd has been closed. While the rest of a message is
    /// awaited, `shutdownFD` becoming readable ends the wait with `.shutdownMidMessage`.
    public func receive(from socket: Int32, shutdownFD: Int32 = -1) throws(VhostUserError) -> Message? {
        var header = (UInt32(0), UInt32(0), UInt32(0))
        var fds = [Int32](repeating: -1, count: Int(CVFS_VHOST_USER_MAX_FDS))
        var fdCount: Int32 = 0
        var truncated: Int32 = 0
        let n = withUnsafeMutableBytes(of: &header) { raw in
            fds.withUnsafeMutableBufferPointer { fdBuffer in
                cvfs_recv_with_fds(socket, raw.baseAddress, MessageCodec.headerSize,
                                   fdBuffer.baseAddress, Int32(fdBuffer.count), &fdCount, &truncated)
            }
        }
        let receiveError = Errno.current
        var received = Array(fds.prefix(Int(max(0, fdCount))))
        if n < 0 {
            let e = receiveError
            received.forEach(Sys.close)
            throw .socket(e)
        }
        if n == 0 {
            received.forEach(Sys.close)
            return nil
        }
        do throws(VhostUserError) {
            // A stream socket may split the header; the fds came with its first byte.
            if n < MessageCodec.headerSize {
                let failure = withUnsafeMutableBytes(of: &header) { raw in
                    MessageCodec.readExactly(socket, UnsafeMutableRawBufferPointer(rebasing: raw[n...]), shutdownFD: shutdownFD)
                }
                if let failure { throw failure }
            }
            if truncated != 0 { throw .fdsTruncated }
            let code = UInt32(littleEndian: header.0)
            let flags = UInt32(littleEndian: header.1)
            let size = UInt32(littleEndian: header.2)
            guard flags & UInt32(CVFS_VHOST_USER_VERSION_MASK) == UInt32(CVFS_VHOST_USER_VERSION) else {
                throw .badVersion(flags: flags)
            }
            guard size <= UInt32(MessageCodec.maxPayload) else { throw .payloadTooLarge(request: code, size: size) }
            var payload = [UInt8](repeating: 0, count: Int(size))
            let failure = payload.withUnsafeMutableBytes { raw in MessageCodec.readExactly(socket, raw, shutdownFD: shutdownFD) }
            if let failure { throw failure }
            guard let known = RequestCode(rawValue: code) else { throw .unknownRequest(code) }
            let request = try decode(code: code, payload: payload, fds: received)
            received = []
            return Message(code: known, request: request,
                           needsReply: flags & UInt32(CVFS_VHOST_USER_NEED_REPLY_MASK) != 0)
        } catch {
            received.forEach(Sys.close)
            throw error
        }
    }

    /// Fills `buffer` from the stream; the error, or nil when it is full.
    /// A frontend that stalls mid-message must not keep a shutdown signal waiting.
    static func readExactly(_ socket: Int32, _ buffer: UnsafeMutableRawBufferPointer, shutdownFD: Int32 = -1) -> VhostUserError? {
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                if shutdownFD >= 0 {
                    let (data, shutdown) = try Sys.pollPair(socket, shutdownFD)
                    if data == 0 && shutdown != 0 { return .shutdownMidMessage }
                }
                n = try Sys.recv(socket, UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                return .socket(error)
            }
            if n == 0 { return .truncatedMessage }
            done += n
        }
        return nil
    }

    /// Decodes a request from its code, payload and fds. Does not close fds:
    /// the caller does when this throws.
    public func decode(code: UInt32, payload: [UInt8], fds: [Int32]) throws(VhostUserError) -> Request {
        guard let request = RequestCode(rawValue: code) else { throw .unknownRequest(code) }
        let name = request.name

        func size(_ expected: Int) throws(VhostUserError) {
            guard payload.count == expected else {
                throw .payloadSize(request: name, expected: "\(expected)", actual: payload.count)
            }
        }
        func fdCount(_ expected: Int) throws(VhostUserError) {
            guard fds.count == expected else {
                throw .fdCount(request: name, expected: "\(expected)", actual: fds.count)
            }
        }
        func u32(_ offset: Int) -> UInt32 {
            payload.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
        }
        func u64(_ offset: Int) -> UInt64 {
            payload.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
        }
        func region(_ offset: Int) -> MemoryRegionDescription {
            MemoryRegionDescription(guestPhysicalAddress: u64(offset), size: u64(offset + 8),
                                    userspaceAddress: u64(offset + 16), mmapOffset: u64(offset + 24))
        }
        func queue(_ raw: UInt32) throws(VhostUserError) -> Int {
            guard Int(raw) < queueCount else {
                throw .queueIndexOutOfRange(request: name, index: raw, queueCount: queueCount)
            }
            return Int(raw)
        }
        /// vring_state {index, num}: index checked.
        func state() throws(VhostUserError) -> (Int, UInt32) {
            try size(8)
            return (try queue(u32(0)), u32(4))
        }
        /// SET_VRING_KICK/CALL/ERR: u64 with the queue index and a no-fd bit.
        func vringFD() throws(VhostUserError) -> (Int, Int32?) {
            try size(8)
            let value = u64(0)
            let noFD = value & UInt64(CVFS_VHOST_USER_VRING_NOFD_MASK) != 0
            let known = UInt64(CVFS_VHOST_USER_VRING_IDX_MASK) | UInt64(CVFS_VHOST_USER_VRING_NOFD_MASK)
            guard value & ~known == 0 else {
                throw .payloadSize(request: name, expected: "a queue index and the no-fd bit", actual: payload.count)
            }
            let q = try queue(UInt32(value & UInt64(CVFS_VHOST_USER_VRING_IDX_MASK)))
            try fdCount(noFD ? 0 : 1)
            return (q, noFD ? nil : fds[0])
        }

        switch request {
        case .getFeatures, .setOwner, .resetOwner, .getProtocolFeatures, .getQueueNum,
             .getMaxMemSlots, .resetDevice, .getStatus, .checkDeviceState:
            // QEMU sends these without a payload; some frontends send a zero u64.
            guard payload.isEmpty || payload.count == 8 else {
                throw .payloadSize(request: name, expected: "0 or 8", actual: payload.count)
            }
            try fdCount(0)
            switch request {
            case .getFeatures: return .getFeatures
            case .setOwner: return .setOwner
            case .resetOwner: return .resetOwner
            case .getProtocolFeatures: return .getProtocolFeatures
            case .getQueueNum: return .getQueueNum
            case .getMaxMemSlots: return .getMaxMemSlots
            case .resetDevice: return .resetDevice
            case .checkDeviceState: return .checkDeviceState
            default: return .getStatus
            }
        case .setFeatures:
            try size(8); try fdCount(0)
            return .setFeatures(u64(0))
        case .setProtocolFeatures:
            try size(8); try fdCount(0)
            return .setProtocolFeatures(u64(0))
        case .setStatus:
            try size(8); try fdCount(0)
            guard u64(0) <= 0xff else {
                throw .payloadSize(request: name, expected: "a status byte in a u64", actual: payload.count)
            }
            return .setStatus(UInt8(truncatingIfNeeded: u64(0)))
        case .setMemTable:
            guard payload.count >= 8 else { throw .payloadSize(request: name, expected: "at least 8", actual: payload.count) }
            let count = Int(u32(0))
            guard count <= MessageCodec.maxRegionsPerTable else {
                throw .tooManyRegions(count: count, limit: MessageCodec.maxRegionsPerTable)
            }
            try size(8 + 32 * count)
            try fdCount(count)
            return .setMemTable((0..<count).map { region(8 + 32 * $0) }, fds: fds)
        case .addMemReg:
            try size(40); try fdCount(1)
            return .addMemReg(region(8), fd: fds[0])
        case .remMemReg:
            try size(40)
            // Some QEMU versions attach the region's fd to REM_MEM_REG; it is not needed.
            guard fds.count <= 1 else { throw .fdCount(request: name, expected: "0 or 1", actual: fds.count) }
            fds.forEach(Sys.close)
            return .remMemReg(region(8))
        case .setVringNum:
            try fdCount(0)
            let (q, num) = try state()
            guard num > 0, num <= UInt32(maxQueueSize), num & (num - 1) == 0 else {
                throw .badQueueSize(queue: q, size: num)
            }
            return .setVringNum(queue: q, size: Int(num))
        case .setVringBase:
            try fdCount(0)
            let (q, num) = try state()
            guard num <= 0xffff else {
                throw .payloadSize(request: name, expected: "a 16-bit ring index", actual: payload.count)
            }
            return .setVringBase(queue: q, base: UInt16(num))
        case .getVringBase:
            try fdCount(0)
            let (q, _) = try state()
            return .getVringBase(queue: q)
        case .setVringEnable:
            try fdCount(0)
            let (q, num) = try state()
            guard num <= 1 else { throw .payloadSize(request: name, expected: "enable 0 or 1", actual: payload.count) }
            return .setVringEnable(queue: q, enabled: num == 1)
        case .setVringAddr:
            try size(40); try fdCount(0)
            let q = try queue(u32(0))
            return .setVringAddr(queue: q, VringAddresses(descriptorTable: u64(8), usedRing: u64(16),
                                                          availableRing: u64(24),
                                                          logUsedRing: u32(4) & (1 << UInt32(VHOST_VRING_F_LOG)) != 0,
                                                          logGuestAddress: u64(32)))
        case .setDeviceStateFD:
            try size(8); try fdCount(1)
            let direction = u32(0)
            guard direction == UInt32(CVFS_VHOST_TRANSFER_STATE_DIRECTION_SAVE)
                    || direction == UInt32(CVFS_VHOST_TRANSFER_STATE_DIRECTION_LOAD) else {
                throw .payloadSize(request: name, expected: "transfer direction 0 (save) or 1 (load)", actual: payload.count)
            }
            return .setDeviceStateFD(save: direction == UInt32(CVFS_VHOST_TRANSFER_STATE_DIRECTION_SAVE),
                                     phase: u32(4), fd: fds[0])
        case .setVringKick:
            let (q, fd) = try vringFD()
            return .setVringKick(queue: q, fd: fd)
        case .setVringCall:
            let (q, fd) = try vringFD()
            return .setVringCall(queue: q, fd: fd)
        case .setVringErr:
            let (q, fd) = try vringFD()
            return .setVringErr(queue: q, fd: fd)
        case .setLogBase:
            try size(16); try fdCount(1)
            return .setLogBase(size: u64(0), offset: u64(8), fd: fds[0])
        case .setLogFD:
            try size(0); try fdCount(1)
            return .setLogFD(fds[0])
        case .setBackendReqFD:
            try size(0); try fdCount(1)
            return .setBackendReqFD(fds[0])
        case .getConfig, .setConfig:
            try fdCount(0)
            guard payload.count >= 12 else { throw .payloadSize(request: name, expected: "at least 12", actual: payload.count) }
            let offset = u32(0), length = u32(4), flags = u32(8)
            guard length <= 256, payload.count == 12 + Int(length) else {
                throw .payloadSize(request: name, expected: "12 + \(length) (at most 256)", actual: payload.count)
            }
            return request == .getConfig ? .getConfig(offset: offset, size: length, flags: flags)
                                         : .setConfig(offset: offset, size: length, flags: flags)
        }
    }

    /// Encodes a reply: the request's code, REPLY flag, version 1, and `payload`.
    public static func encodeReply(_ code: RequestCode, payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(headerSize + payload.count)
        let flags = UInt32(CVFS_VHOST_USER_VERSION) | UInt32(CVFS_VHOST_USER_REPLY_MASK)
        for word in [code.rawValue, flags, UInt32(payload.count)] {
            withUnsafeBytes(of: word.littleEndian) { bytes.append(contentsOf: $0) }
        }
        bytes.append(contentsOf: payload)
        return bytes
    }

    public static func u64Payload(_ value: UInt64) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    public static func vringStatePayload(queue: Int, num: UInt32) -> [UInt8] {
        var bytes = withUnsafeBytes(of: UInt32(truncatingIfNeeded: queue).littleEndian) { Array($0) }
        withUnsafeBytes(of: num.littleEndian) { bytes.append(contentsOf: $0) }
        return bytes
    }

    /// Sends one reply.
    public static func send(_ bytes: [UInt8], to socket: Int32) throws(VhostUserError) {
        let failure = bytes.withUnsafeBytes { raw -> Errno? in
            do throws(Errno) { try Sys.sendAll(socket, raw) } catch { return error }
            return nil
        }
        if let failure { throw .socket(failure) }
    }
}
