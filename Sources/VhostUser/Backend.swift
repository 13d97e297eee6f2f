#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

public struct BackendConfiguration: Sendable {
    public var numRequestQueues: Int   // 1...16
    public var maxQueueSize: Int       // 32768 max
    /// Threads shared by the request queues for batches with many chains
    /// pending (`--thread-pool-size`); 0 handles every chain on its queue thread.
    public var threadPoolSize: Int = 0
    /// A request queue hands a batch to the pool when at least this many chains
    /// are pending; fewer are handled inline, which is faster at low depth.
    public var poolThreshold: Int = 4

    public init(numRequestQueues: Int = 16, maxQueueSize: Int = 32768) {
        self.numRequestQueues = min(max(numRequestQueues, 1), 16)
        self.maxQueueSize = min(max(maxQueueSize, 1), 32768)
    }

    /// hiprio plus the request queues.
    public var queueCount: Int { 1 + numRequestQueues }
}

/// Feature bits the device offers (masks; bit numbers from linux/virtio_ring.h,
/// linux/virtio_config.h and the vhost-user spec, through the C target).
public enum VirtioFeatures {
    public static let ringIndirectDescriptors = CVFS_VIRTIO_RING_F_INDIRECT_DESC_MASK
    public static let ringEventIndex = CVFS_VIRTIO_RING_F_EVENT_IDX_MASK
    public static let protocolFeatures = CVFS_VHOST_USER_F_PROTOCOL_FEATURES_MASK
    public static let version1 = CVFS_VIRTIO_F_VERSION_1_MASK
    /// VHOST_F_LOG_ALL: we mark every page we write while the frontend migrates.
    public static let logAll = CVFS_VHOST_F_LOG_ALL_MASK
    public static let offered = version1 | ringIndirectDescriptors | ringEventIndex | protocolFeatures | logAll
}

/// vhost-user protocol features (masks of the bits declared once in the C target).
public enum ProtocolFeatures {
    public static let multiQueue = cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_MQ)
    public static let replyAck = cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_REPLY_ACK)
    public static let backendRequests = cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_BACKEND_REQ)
    public static let resetDevice = cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_RESET_DEVICE)
    public static let configureMemorySlots = cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)
    public static let logSharedMemory = cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_LOG_SHMFD)
    public static let deviceState = cvfs_vhost_user_protocol_mask(CVFS_VHOST_USER_PROTOCOL_F_DEVICE_STATE)
    public static let offered = multiQueue | replyAck | backendRequests | resetDevice | configureMemorySlots
        | logSharedMemory | deviceState
}

/// The vhost-user device: negotiates with one frontend at a time, keeps the
/// memory table and vring state, and runs one thread per started queue.
/// `serve` runs on one thread; only the queue threads run beside it.
public final class VhostUserBackend<Handler: VirtqueueHandler> {
    public static var maxMemorySlots: Int { 32 }

    /// Per-queue state kept by the message thread.
    struct QueueState {
        var size = 0
        var addresses: VringAddresses?
        var lastAvailable: UInt16 = 0
        var nextUsed: UInt16 = 0
        var kickFD: Int32?
        var callFD: Int32?
        var errFD: Int32?
        var enabled = false
        var broken = false
        var worker: QueueWorker<Handler>?
        /// Replies to chains answered late; survives the queue thread's restarts
        /// (a new memory table) and is closed when the ring goes away.
        var replies: LateReplies?
    }

    let configuration: BackendConfiguration
    let handler: Handler
    let logger: Logger
    let codec: MessageCodec
    var queues: [QueueState]
    var memory: GuestMemory?
    var ackedFeatures: UInt64 = 0
    var protocolFeatures: UInt64 = 0
    var status: UInt8 = 0
    var backendRequestFD: Int32?
    /// Started with the first request queue when configured; stopped with the connection.
    var pool: WorkerPool?
    /// An eventfd the SIGBUS guard counts repaired guest memory faults on (created by
    /// `serve`); readable means a region's file shrank under us: the connection ends.
    var faultFD: Int32 = -1
    /// (st_dev, st_ino) of an eventfd: every eventfd shares the kernel's one anonymous
    /// inode, so a kick/call/err fd must show the same pair.
    var eventFDIdentity: (dev_t, ino_t)?
    /// Migration (DirtyLog.swift, DeviceState.swift): the state handler, the frontend's
    /// dirty log, and the state transfer in progress.
    public var deviceState: (any DeviceStateHandler)?
    var dirtyBitmap: DirtyBitmap?
    var transfer: DeviceStateTransfer?

    public init(configuration: BackendConfiguration, handler: Handler, logger: Logger) {
        self.configuration = configuration
        self.handler = handler
        self.logger = logger
        codec = MessageCodec(queueCount: configuration.queueCount, maxQueueSize: configuration.maxQueueSize)
        queues = Array(repeating: QueueState(), count: configuration.queueCount)
    }

    deinit {
        resetConnectionState()
        if faultFD >= 0 { Sys.close(faultFD) }
    }

    /// Queues whose thread is running (for tests and logs).
    public var runningQueues: [Int] { queues.indices.filter { queues[$0].worker != nil } }

    /// How a `serve` ended.
    public enum End: Sendable, Equatable {
        /// `shutdownFD` became readable.
        case shutdownRequested
        /// The frontend closed the connection between messages (QEMU exited or stopped the device).
        case frontendDisconnected
        /// The frontend sent something we refuse; the error was logged and the connection closed.
        case frontendError(VhostUserError)
    }

    /// Serves one frontend on `connection` until it disconnects, `shutdownFD` (an fd that
    /// becomes readable, e.g. a signalfd or eventfd) is readable, or it sends a message we
    /// refuse (logged, the connection closed); returns which. Throws only for local
    /// failures such as thread creation.
    ///
    /// Takes ownership of `connection`: it is closed when `serve` returns, after every
    /// queue thread has stopped and all memory has been unmapped.
    @discardableResult
    public func serve(connection: Int32, shutdownFD: Int32) throws(VhostUserError) -> End {
        defer {
            resetConnectionState()
            Sys.close(connection)
        }
        if faultFD < 0 {
            do {
                faultFD = try Sys.eventfd(flags: CVFS_EFD_CLOEXEC | CVFS_EFD_NONBLOCK)
                let st = try Sys.fstat(faultFD)
                eventFDIdentity = (st.st_dev, st.st_ino)
            } catch {
                throw .guardFailed(error)
            }
        }
        while true {
            let revents: [Int16]
            do {
                revents = try Sys.pollReadable([connection, shutdownFD, faultFD], timeoutMilliseconds: -1)
            } catch {
                throw .socket(error)
            }
            let (incoming, shutdown, fault) = (revents[0], revents[1], revents[2])
            if shutdown != 0 {
                logger.info("shutdown requested; closing the frontend connection")
                return .shutdownRequested
            }
            if fault != 0 {
                let count = (try? Sys.eventfdDrain(faultFD)) ?? 0
                logger.error("closing the frontend connection: \(VhostUserError.guestMemoryFault) (\(count) fault(s) repaired with zero pages)")
                return .frontendError(.guestMemoryFault)
            }
            guard incoming != 0 else { continue }
            let message: Message
            do {
                guard let m = try codec.receive(from: connection, shutdownFD: shutdownFD) else {
                    logger.info("frontend disconnected")
                    return .frontendDisconnected
                }
                message = m
            } catch {
                logger.error("closing the frontend connection: \(error)")
                switch error {
                case .shutdownMidMessage: return .shutdownRequested
                // The frontend went away; what it left half sent is no request to refuse.
                case .truncatedMessage: return .frontendDisconnected
                default: return .frontendError(error)
                }
            }
            logger.debug("vhost-user \(message.code.name): \(message.request)")
            do {
                try handle(message, connection: connection)
            } catch {
                if case .thread = error { throw error }
                logger.error("closing the frontend connection: \(message.code.name): \(error)")
                if message.needsReply && protocolFeatures & ProtocolFeatures.replyAck != 0 {
                    try? MessageCodec.send(MessageCodec.encodeReply(message.code, payload: MessageCodec.u64Payload(1)),
                                           to: connection)
                }
                return .frontendError(error)
            }
        }
    }

    /// Applies one message and sends its reply (or the REPLY_ACK the frontend asked for).
    func handle(_ message: Message, connection: Int32) throws(VhostUserError) {
        var reply: [UInt8]?
        switch message.request {
        case .getFeatures:
            reply = MessageCodec.u64Payload(VirtioFeatures.offered)
        case .setFeatures(let features):
            guard features & ~VirtioFeatures.offered == 0 else {
                throw .featuresNotOffered(request: message.code.name, acked: features, offered: VirtioFeatures.offered)
            }
            ackedFeatures = features
            // Running rings must follow the new EVENT_IDX / INDIRECT choice.
            let running = runningQueues
            stopAllQueues()
            for q in running { try startQueueIfReady(q) }
        case .setOwner:
            break
        case .resetOwner, .resetDevice:
            stopAllQueues()
            resetQueues()
            memory = nil
            ackedFeatures = 0
            status = 0
        case .getProtocolFeatures:
            reply = MessageCodec.u64Payload(ProtocolFeatures.offered)
        case .setProtocolFeatures(let features):
            guard features & ~ProtocolFeatures.offered == 0 else {
                throw .featuresNotOffered(request: message.code.name, acked: features, offered: ProtocolFeatures.offered)
            }
            protocolFeatures = features
        case .getQueueNum:
            reply = MessageCodec.u64Payload(UInt64(configuration.queueCount))
        case .getMaxMemSlots:
            reply = MessageCodec.u64Payload(UInt64(VhostUserBackend.maxMemorySlots))
        case .setMemTable(let regions, let fds):
            defer { fds.forEach(Sys.close) }
            let table = try GuestMemory(regions: regions, fds: fds, faultNotifyFD: faultFD)
            logUnsealed(table)
            try replaceMemory(table)
        case .addMemReg(let region, let fd):
            defer { Sys.close(fd) }
            let current = memory ?? GuestMemory()
            guard current.regionCount < VhostUserBackend.maxMemorySlots else {
                throw .tooManyRegions(count: current.regionCount + 1, limit: VhostUserBackend.maxMemorySlots)
            }
            let table = try current.adding(region, fd: fd, faultNotifyFD: faultFD)
            logUnsealed(table)
            try replaceMemory(table)
        case .remMemReg(let region):
            guard let current = memory else { throw .noMemoryTable(request: message.code.name) }
            try replaceMemory(try current.removing(region))
        case .setVringNum(let q, let size):
            stopQueue(q)
            queues[q].size = size
            try startQueueIfReady(q)
        case .setVringAddr(let q, let addresses):
            guard let memory else { throw .noMemoryTable(request: message.code.name) }
            if queues[q].size > 0 {
                // Fail now, naming the message, rather than when the queue starts.
                _ = try RingPointers(addresses, size: queues[q].size, memory: memory, queue: q)
            }
            stopQueue(q)
            queues[q].addresses = addresses
            queues[q].broken = false
            try startQueueIfReady(q)
        case .setVringBase(let q, let base):
            stopQueue(q)
            queues[q].lastAvailable = base
            queues[q].nextUsed = base
            queues[q].broken = false
            try startQueueIfReady(q)
        case .getVringBase(let q):
            stopQueue(q)
            // The ring stays stopped until the frontend kicks it again; chains still
            // waiting for a late reply are dropped with it.
            replace(&queues[q].kickFD, with: nil)
            queues[q].replies?.close()
            queues[q].replies = nil
            reply = MessageCodec.vringStatePayload(queue: q, num: UInt32(queues[q].lastAvailable))
        case .setVringKick(let q, let fd):
            try checkEventFD(fd, message, queue: q)
            stopQueue(q)
            // Never block a queue thread on a frontend's fd (eventfds from QEMU already are non-blocking).
            if let fd { try? Sys.setNonBlocking(fd) }
            replace(&queues[q].kickFD, with: fd)
            if fd == nil { logger.warning("queue \(q): no kick fd (polling mode) is not supported") }
            // Without PROTOCOL_FEATURES a ring is enabled by its kick fd.
            if ackedFeatures & VirtioFeatures.protocolFeatures == 0 { queues[q].enabled = true }
            try startQueueIfReady(q)
        case .setVringCall(let q, let fd):
            try checkEventFD(fd, message, queue: q)
            stopQueue(q)
            // A call fd that cannot take the write (a full pipe) loses that notification instead of hanging the queue.
            if let fd { try? Sys.setNonBlocking(fd) }
            replace(&queues[q].callFD, with: fd)
            try startQueueIfReady(q)
        case .setVringErr(let q, let fd):
            try checkEventFD(fd, message, queue: q)
            replace(&queues[q].errFD, with: fd)
        case .setVringEnable(let q, let enabled):
            stopQueue(q)
            queues[q].enabled = enabled
            try startQueueIfReady(q)
        case .setLogBase(let size, let offset, let fd):
            try setDirtyLog(size: size, offset: offset, fd: fd)
            // With LOG_SHMFD the frontend waits for this reply.
            reply = MessageCodec.u64Payload(0)
        case .setLogFD(let fd):
            // Only for telling the frontend the log changed; it reads the log anyway.
            Sys.close(fd)
        case .setDeviceStateFD(let save, let phase, let fd):
            reply = try startDeviceStateTransfer(save: save, phase: phase, fd: fd)
        case .checkDeviceState:
            reply = checkDeviceStateTransfer()
        case .getConfig(let offset, let size, let flags):
            // The virtio-fs config space (tag, queue count) belongs to the frontend.
            var payload: [UInt8] = []
            for word in [offset, size, flags] {
                withUnsafeBytes(of: word.littleEndian) { payload.append(contentsOf: $0) }
            }
            payload.append(contentsOf: repeatElement(0, count: Int(size)))
            reply = payload
        case .setConfig:
            break
        case .setBackendReqFD(let fd):
            replace(&backendRequestFD, with: fd)
        case .setStatus(let value):
            status = value
        case .getStatus:
            reply = MessageCodec.u64Payload(UInt64(status))
        }
        if let reply {
            try MessageCodec.send(MessageCodec.encodeReply(message.code, payload: reply), to: connection)
        } else if message.needsReply && protocolFeatures & ProtocolFeatures.replyAck != 0 {
            try MessageCodec.send(MessageCodec.encodeReply(message.code, payload: MessageCodec.u64Payload(0)),
                                  to: connection)
        }
    }

    /// A kick, call or err fd must be an eventfd: a regular file or a pipe would read
    /// as always ready and spin the queue thread. On refusal the fd is closed.
    private func checkEventFD(_ fd: Int32?, _ message: Message, queue: Int) throws(VhostUserError) {
        guard let fd else { return }
        let kind: String
        do {
            let st = try Sys.fstat(fd)
            if st.st_mode & S_IFMT == 0, let identity = eventFDIdentity,
               st.st_dev == identity.0, st.st_ino == identity.1 {
                return
            }
            kind = fileKind(st.st_mode)
        } catch {
            kind = "unusable (\(error))"
        }
        Sys.close(fd)
        throw .notAnEventFD(request: message.code.name, queue: queue, kind: kind)
    }

    /// Says once per table when the frontend could still shrink a region's file.
    private func logUnsealed(_ table: GuestMemory) {
        let unsealed = table.unsealedRegionCount
        guard unsealed > 0 else { return }
        logger.info("\(unsealed) of \(table.regionCount) guest memory regions are not sealed against shrinking (hugetlbfs or file-backed memory, or an unsealed memfd); a region that shrinks later closes the connection")
    }

    /// Swaps the memory table with every queue thread stopped, then restarts them
    /// (their rings are translated again against the new table).
    private func replaceMemory(_ table: GuestMemory) throws(VhostUserError) {
        stopAllQueues()
        memory = table
        // Every queue that is ready starts: those that ran, and those that waited only for memory.
        for q in queues.indices { try startQueueIfReady(q) }
    }

    /// Starts queue `q`'s thread if it has everything a running queue needs.
    func startQueueIfReady(_ q: Int) throws(VhostUserError) {
        let state = queues[q]
        guard state.worker == nil, !state.broken, state.enabled, state.size > 0,
              let addresses = state.addresses, let kickFD = state.kickFD, let memory else { return }
        let rings = try RingPointers(addresses, size: state.size, memory: memory, queue: q)
        var queue = SplitQueue(size: state.size, rings: rings, memory: memory,
                               eventIndex: ackedFeatures & VirtioFeatures.ringEventIndex != 0,
                               indirect: ackedFeatures & VirtioFeatures.ringIndirectDescriptors != 0,
                               lastAvailable: state.lastAvailable, nextUsed: state.nextUsed)
        queue.dirtyLog = queueDirtyLog(addresses, memory: memory)
        let worker: QueueWorker<Handler>
        do throws(Errno) {
            let replies: LateReplies
            if let existing = state.replies {
                replies = existing
            } else {
                replies = try LateReplies()
            }
            queues[q].replies = replies
            // The hiprio queue (FORGET, INTERRUPT) never waits behind the pool.
            if q != 0 && configuration.threadPoolSize > 0 && pool == nil {
                pool = try WorkerPool(size: min(configuration.threadPoolSize, 1024))
                logger.debug("thread pool of \(configuration.threadPoolSize) started")
            }
            worker = try QueueWorker(queueIndex: q, queue: queue, kickFD: kickFD, callFD: state.callFD,
                                     replies: replies, handler: handler, logger: logger, pool: q == 0 ? nil : pool,
                                     poolThreshold: configuration.poolThreshold)
        } catch {
            throw .thread(error)
        }
        do {
            try worker.start()
        } catch {
            throw .thread(error)
        }
        queues[q].worker = worker
        logger.info("queue \(q) started (size \(state.size), next available \(state.lastAvailable))")
    }

    /// Stops queue `q`'s thread (joining it) and keeps its ring position.
    func stopQueue(_ q: Int) {
        guard let worker = queues[q].worker else { return }
        worker.stop()
        queues[q].lastAvailable = worker.queue.lastAvailable
        queues[q].nextUsed = worker.queue.nextUsed
        queues[q].broken = worker.broken
        queues[q].worker = nil
        logger.debug("queue \(q) stopped (next available \(worker.queue.lastAvailable))")
    }

    func stopAllQueues() {
        for q in queues.indices { stopQueue(q) }
    }

    /// Forgets all vring state and closes the queues' fds (threads already stopped).
    private func resetQueues() {
        for q in queues.indices {
            for fd in [queues[q].kickFD, queues[q].callFD, queues[q].errFD] {
                if let fd { Sys.close(fd) }
            }
            queues[q].replies?.close()
            queues[q] = QueueState()
        }
    }

    /// Back to the state of a fresh backend: threads joined, fds closed, memory unmapped.
    private func resetConnectionState() {
        stopAllQueues()
        pool?.shutdown()
        pool = nil
        resetQueues()
        memory = nil
        ackedFeatures = 0
        protocolFeatures = 0
        status = 0
        replace(&backendRequestFD, with: nil)
        _ = transfer?.finish()
        transfer = nil
        dirtyBitmap = nil
    }

    /// Closes the fd a message supersedes and keeps the new one (nil: none).
    private func replace(_ slot: inout Int32?, with fd: Int32?) {
        if let old = slot { Sys.close(old) }
        slot = fd
    }
}
