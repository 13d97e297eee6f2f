#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// A vhost-user frontend doing what QEMU 7.2 does for `vhost-user-fs-pci`:
/// it connects to a backend's socket, negotiates features, shares guest memory
/// and sets up one hiprio queue (index 0) plus `requestQueues` request queues.
///
/// Usage: `init`, `handshake()`, then drive `queues[i]` (or a `FuseClient`),
/// then `close()`. One thread drives a frontend.
public final class VhostUserFrontend {
    /// What to negotiate beyond the mandatory features.
    public struct Options: Sendable {
        /// Negotiate VIRTIO_RING_F_EVENT_IDX when the backend offers it.
        public var eventIndex = true
        /// Negotiate VIRTIO_RING_F_INDIRECT_DESC when the backend offers it.
        public var indirectDescriptors = true
        /// Negotiate VHOST_USER_PROTOCOL_F_REPLY_ACK when offered (acks every set message).
        public var replyAck = true
        /// Descriptors per virtqueue (a power of two; QEMU's default for virtio-fs is 128).
        public var queueSize: UInt16 = 128
        /// How long to wait for any single reply.
        public var replyTimeoutMilliseconds: Int32 = 5000
        /// Seal the guest memory memfd against resizing (QEMU's memory-backend-memfd default).
        public var sealMemory = true
        /// Refuse a backend that offers fewer queues than wanted (GET_QUEUE_NUM). QEMU's
        /// vhost-user-fs does not check; tests turn this off to act like it.
        public var checkQueueCount = true

        public init() {}
    }

    public let socketPath: String
    public let memory: GuestMemory
    public let requestQueues: Int
    public let options: Options
    /// The connected socket; -1 after `close()`.
    public private(set) var socket: Int32
    /// Index 0 is the hiprio queue; 1... are request queues. Empty before `handshake()`.
    public private(set) var queues: [SplitQueue] = []

    /// What the backend offered and what we settled on.
    public private(set) var offeredFeatures: UInt64 = 0
    public private(set) var ackedFeatures: UInt64 = 0
    public private(set) var offeredProtocolFeatures: UInt64 = 0
    public private(set) var ackedProtocolFeatures: UInt64 = 0
    /// The backend's GET_QUEUE_NUM answer (0 when MQ was not offered).
    public private(set) var backendQueueCount: UInt64 = 0
    /// Messages sent so far on this connection.
    public private(set) var messagesSent = 0
    /// When set, the frontend dies after this many messages in all: the next send
    /// closes the connection instead and throws `.disconnected` (tests of a frontend
    /// that goes away at any step of the handshake).
    public var disconnectAfterMessages: Int?

    public static let featureVersion1 = CVFS_VIRTIO_F_VERSION_1_MASK
    public static let featureIndirectDescriptors = CVFS_VIRTIO_RING_F_INDIRECT_DESC_MASK
    public static let featureEventIndex = CVFS_VIRTIO_RING_F_EVENT_IDX_MASK
    public static let featureProtocolFeatures = CVFS_VHOST_USER_F_PROTOCOL_FEATURES_MASK

    /// Connects to `socketPath` and maps `memorySize` bytes of guest memory.
    public init(socketPath: String, memorySize: Int = 256 << 20, requestQueues: Int = 1,
                options: Options = Options()) throws(FrontendError) {
        guard requestQueues >= 1, requestQueues < 255 else { throw .noRoom("request queue count \(requestQueues)") }
        guard options.queueSize > 0, options.queueSize & (options.queueSize - 1) == 0 else {
            throw .noRoom("queue size \(options.queueSize) is not a power of two")
        }
        self.socketPath = socketPath
        self.requestQueues = requestQueues
        self.options = options
        self.memory = try GuestMemory(size: memorySize, sealed: options.sealMemory)
        let fd = try attempt("socket") { () throws(Errno) in try Sys.unixStreamSocket() }
        do {
            try Sys.connect(fd, try Sys.unixAddress(socketPath))
        } catch {
            Sys.close(fd)
            throw .system(step: "connect \(socketPath)", error)
        }
        socket = fd
    }

    deinit { close() }

    /// Closes the connection (a backend that serves one frontend exits now) and the queues' eventfds.
    public func close() {
        if socket >= 0 {
            Sys.close(socket)
            socket = -1
        }
        for queue in queues { queue.closeEventFDs() }
        queues = []
    }

    // MARK: - The handshake

    /// Performs the whole QEMU-style start sequence; afterwards every queue is enabled.
    public func handshake() throws(FrontendError) {
        offeredFeatures = try requestU64(CVFS_VHOST_USER_GET_FEATURES)
        guard offeredFeatures & Self.featureVersion1 != 0 else {
            throw .protocolViolation("backend does not offer VIRTIO_F_VERSION_1 (features \(hex(offeredFeatures)))")
        }
        if offeredFeatures & Self.featureProtocolFeatures != 0 {
            offeredProtocolFeatures = try requestU64(CVFS_VHOST_USER_GET_PROTOCOL_FEATURES)
            var wanted: UInt64 = cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_MQ)
            if options.replyAck { wanted |= cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_REPLY_ACK) }
            // Decided before sending: the ack rule applies from the next message on.
            let settled = offeredProtocolFeatures & wanted
            try sendU64(CVFS_VHOST_USER_SET_PROTOCOL_FEATURES, settled)
            ackedProtocolFeatures = settled
            if settled & (cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_MQ)) != 0 {
                backendQueueCount = try requestU64(CVFS_VHOST_USER_GET_QUEUE_NUM)
                guard backendQueueCount >= UInt64(requestQueues + 1) || !options.checkQueueCount else {
                    throw .protocolViolation("backend supports \(backendQueueCount) queues, \(requestQueues + 1) needed")
                }
            }
        }
        try sendMessage(CVFS_VHOST_USER_SET_OWNER, payload: UnsafeRawBufferPointer(start: nil, count: 0))

        var features = Self.featureVersion1 | (offeredFeatures & Self.featureProtocolFeatures)
        if options.eventIndex { features |= offeredFeatures & Self.featureEventIndex }
        if options.indirectDescriptors { features |= offeredFeatures & Self.featureIndirectDescriptors }
        try sendU64(CVFS_VHOST_USER_SET_FEATURES, features)
        ackedFeatures = features

        try sendMemoryTable()

        let eventIndex = features & Self.featureEventIndex != 0
        for index in 0...requestQueues {
            let queue = try SplitQueue(index: index, size: options.queueSize, memory: memory, eventIndex: eventIndex)
            queues.append(queue)
            try sendVringState(CVFS_VHOST_USER_SET_VRING_NUM, index: index, num: UInt32(options.queueSize))
            try sendVringState(CVFS_VHOST_USER_SET_VRING_BASE, index: index, num: 0)
            var address = cvfs_vhost_user_vring_addr()
            address.index = UInt32(index)
            address.flags = 0
            address.descriptor = queue.descriptorUserAddress
            address.used = queue.usedUserAddress
            address.available = queue.availableUserAddress
            address.log = 0
            try withUnsafeBytes(of: &address) { (raw) throws(FrontendError) in
                try sendMessage(CVFS_VHOST_USER_SET_VRING_ADDR, payload: raw)
            }
            try sendU64(CVFS_VHOST_USER_SET_VRING_KICK, UInt64(index), descriptors: [queue.kickFD])
            try sendU64(CVFS_VHOST_USER_SET_VRING_CALL, UInt64(index), descriptors: [queue.callFD])
        }
        if features & Self.featureProtocolFeatures != 0 {
            // With protocol features negotiated, rings start disabled.
            for index in 0...requestQueues {
                try sendVringState(CVFS_VHOST_USER_SET_VRING_ENABLE, index: index, num: 1)
            }
        }
    }

    /// Sends SET_VRING_KICK, SET_VRING_CALL or SET_VRING_ERR for queue `index` with
    /// `fd` (any descriptor: hostile-frontend tests send files that are not eventfds).
    public func sendVringDescriptor(_ request: cvfs_vhost_user_request, index: Int, fd: Int32) throws(FrontendError) {
        try sendU64(request, UInt64(index), descriptors: [fd])
    }

    /// Sends SET_MEM_TABLE with this frontend's one region again (QEMU does so when
    /// the guest's memory layout changes); running queues must survive it.
    public func resendMemoryTable() throws(FrontendError) {
        try sendMemoryTable()
    }

    private func sendMemoryTable() throws(FrontendError) {
        var table = cvfs_vhost_user_memory()
        table.nregions = 1
        table.regions.0 = cvfs_vhost_user_memory_region(
            guest_phys_addr: memory.guestBase, memory_size: UInt64(memory.size),
            userspace_addr: memory.userspaceAddress, mmap_offset: 0)
        // QEMU sends only the regions in use: the header words plus nregions entries.
        let length = 8 + MemoryLayout<cvfs_vhost_user_memory_region>.size
        try withUnsafeBytes(of: &table) { (raw) throws(FrontendError) in
            try sendMessage(CVFS_VHOST_USER_SET_MEM_TABLE, payload: UnsafeRawBufferPointer(rebasing: raw[0..<length]),
                            descriptors: [memory.fd])
        }
    }

    // MARK: - Messages

    private var replyAckNegotiated: Bool {
        ackedProtocolFeatures & (cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_REPLY_ACK)) != 0
    }

    /// Sends a request that expects no reply (or an ack when REPLY_ACK is on, which it then checks).
    public func sendMessage(_ request: cvfs_vhost_user_request, payload: UnsafeRawBufferPointer,
                            descriptors: [Int32] = []) throws(FrontendError) {
        let wantAck = replyAckNegotiated
        let flags = UInt32(CVFS_VHOST_USER_VERSION) | (wantAck ? UInt32(CVFS_VHOST_USER_NEED_REPLY_MASK) : 0)
        try sendRaw(request: request.rawValue, flags: flags, payload: payload, descriptors: descriptors)
        if wantAck {
            let reply = try receiveReply(expecting: request.rawValue)
            guard reply.count == 8 else { throw .protocolViolation("ack for request \(request.rawValue) has \(reply.count) bytes") }
            let status = reply.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            guard status == 0 else { throw .protocolViolation("backend nacked request \(request.rawValue) with \(status)") }
        }
    }

    private func sendU64(_ request: cvfs_vhost_user_request, _ value: UInt64, descriptors: [Int32] = []) throws(FrontendError) {
        var v = value.littleEndian
        try withUnsafeBytes(of: &v) { (raw) throws(FrontendError) in
            try sendMessage(request, payload: raw, descriptors: descriptors)
        }
    }

    private func sendVringState(_ request: cvfs_vhost_user_request, index: Int, num: UInt32) throws(FrontendError) {
        var state = cvfs_vhost_user_vring_state(index: UInt32(index), num: num)
        try withUnsafeBytes(of: &state) { (raw) throws(FrontendError) in
            try sendMessage(request, payload: raw)
        }
    }

    /// Stops queue `index` the way QEMU does at shutdown (GET_VRING_BASE) and returns
    /// the backend's next available index: how many chains it has taken from the ring.
    public func stopQueue(_ index: Int) throws(FrontendError) -> UInt32 {
        var state = cvfs_vhost_user_vring_state(index: UInt32(index), num: 0)
        try withUnsafeBytes(of: &state) { (raw) throws(FrontendError) in
            try sendRaw(request: CVFS_VHOST_USER_GET_VRING_BASE.rawValue, flags: UInt32(CVFS_VHOST_USER_VERSION), payload: raw)
        }
        let reply = try receiveReply(expecting: CVFS_VHOST_USER_GET_VRING_BASE.rawValue)
        guard reply.count == 8 else { throw .protocolViolation("GET_VRING_BASE reply has \(reply.count) bytes") }
        let (replyIndex, num) = reply.withUnsafeBytes {
            (UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)), UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        }
        guard replyIndex == UInt32(index) else { throw .protocolViolation("GET_VRING_BASE answered for queue \(replyIndex)") }
        return num
    }

    /// Starts queue `index` again after `stopQueue` the way QEMU does when the guest
    /// resumes it: SET_VRING_BASE with the ring position, then the same kick fd again,
    /// then SET_VRING_ENABLE when protocol features were negotiated.
    public func resumeQueue(_ index: Int, base: UInt32) throws(FrontendError) {
        guard index >= 0, index < queues.count else { throw .noRoom("no queue \(index)") }
        try sendVringState(CVFS_VHOST_USER_SET_VRING_BASE, index: index, num: base)
        try sendU64(CVFS_VHOST_USER_SET_VRING_KICK, UInt64(index), descriptors: [queues[index].kickFD])
        if ackedFeatures & Self.featureProtocolFeatures != 0 { try setVringEnabled(index, true) }
    }

    /// SET_VRING_ENABLE for queue `index`.
    public func setVringEnabled(_ index: Int, _ enabled: Bool) throws(FrontendError) {
        try sendVringState(CVFS_VHOST_USER_SET_VRING_ENABLE, index: index, num: enabled ? 1 : 0)
    }

    /// Sends a GET_* request and returns its 64-bit answer.
    public func requestU64(_ request: cvfs_vhost_user_request) throws(FrontendError) -> UInt64 {
        try sendRaw(request: request.rawValue, flags: UInt32(CVFS_VHOST_USER_VERSION),
                    payload: UnsafeRawBufferPointer(start: nil, count: 0))
        let reply = try receiveReply(expecting: request.rawValue)
        guard reply.count == 8 else { throw .protocolViolation("reply to \(request.rawValue) has \(reply.count) bytes, 8 expected") }
        return UInt64(littleEndian: reply.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    }

    /// Sends one message exactly as given: any request number, flags and payload,
    /// even ones that contradict each other (for hostile-frontend tests).
    /// `declaredSize` overrides the header's size field (defaults to the payload's length).
    public func sendRaw(request: UInt32, flags: UInt32, payload: UnsafeRawBufferPointer,
                        declaredSize: UInt32? = nil, descriptors: [Int32] = []) throws(FrontendError) {
        guard socket >= 0 else { throw .disconnected }
        if let limit = disconnectAfterMessages, messagesSent >= limit {
            close()
            throw .disconnected
        }
        messagesSent += 1
        var message = [UInt8](repeating: 0, count: 12 + payload.count)
        message.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: request.littleEndian, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: flags.littleEndian, toByteOffset: 4, as: UInt32.self)
            raw.storeBytes(of: (declaredSize ?? UInt32(payload.count)).littleEndian, toByteOffset: 8, as: UInt32.self)
            if payload.count > 0 {
                UnsafeMutableRawBufferPointer(rebasing: raw[12...]).copyMemory(from: payload)
            }
        }
        let fd = socket
        let result: Result<Int, Errno> = message.withUnsafeBytes { raw in
            Result { () throws(Errno) in try Sys.sendWithDescriptors(fd, raw, descriptors: descriptors) }
        }
        let sent: Int
        switch result {
        case .success(let n): sent = n
        case .failure(let error):
            if error == Errno(EPIPE) || error == .connectionReset { throw .disconnected }
            throw .system(step: "send vhost-user request \(request)", error)
        }
        guard sent == message.count else { throw .protocolViolation("short send of request \(request)") }
    }

    /// Reads one reply and checks it answers `request`; returns its payload.
    public func receiveReply(expecting request: UInt32) throws(FrontendError) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 12)
        try readExactly(&header)
        let (got, flags, size) = header.withUnsafeBytes { raw in
            (UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
             UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
             UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        }
        guard got == request else { throw .protocolViolation("reply to \(got), expected \(request)") }
        guard flags & UInt32(CVFS_VHOST_USER_REPLY_MASK) != 0 else { throw .protocolViolation("reply lacks the reply flag") }
        guard size <= 4096 else { throw .protocolViolation("reply payload of \(size) bytes") }
        var payload = [UInt8](repeating: 0, count: Int(size))
        try readExactly(&payload)
        return payload
    }

    /// True once the backend has closed its end (waits up to `timeoutMilliseconds`).
    public func waitForDisconnect(timeoutMilliseconds: Int32) -> Bool {
        guard socket >= 0 else { return true }
        let deadline = Sys.monotonicNanoseconds() + UInt64(max(timeoutMilliseconds, 0)) * 1_000_000
        var scratch = [UInt8](repeating: 0, count: 256)
        while true {
            let now = Sys.monotonicNanoseconds()
            if now >= deadline { return false }
            let left = Int32((deadline - now) / 1_000_000) + 1
            guard let revents = try? Sys.pollReadable([socket], timeoutMilliseconds: left), revents[0] != 0 else { continue }
            let fd = socket
            let n = scratch.withUnsafeMutableBytes { try? Sys.read(fd, $0) }
            if n == nil || n == 0 { return true }
        }
    }

    private func readExactly(_ buffer: inout [UInt8]) throws(FrontendError) {
        var done = 0
        let fd = socket
        let timeout = options.replyTimeoutMilliseconds
        while done < buffer.count {
            let revents = try attempt("poll socket") { () throws(Errno) in try Sys.pollReadable([fd], timeoutMilliseconds: timeout) }
            guard revents[0] != 0 else { throw .timedOut("a vhost-user reply") }
            let start = done
            let result: Result<Int, Errno> = buffer.withUnsafeMutableBytes { raw in
                Result { () throws(Errno) in try Sys.read(fd, UnsafeMutableRawBufferPointer(rebasing: raw[start...])) }
            }
            let n: Int
            switch result {
            case .success(let count): n = count
            case .failure(let error):
                if error == .connectionReset { throw .disconnected }
                throw .system(step: "read vhost-user reply", error)
            }
            if n == 0 { throw .disconnected }
            done += n
        }
    }
}

func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
