#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// One FUSE request, as the guest kernel would send it over virtio-fs.
public enum FuseRequest: Sendable {
    case initialize(maxReadahead: UInt32, flags: UInt32)
    case lookup(parent: UInt64, name: String)
    /// Goes on the hiprio queue and gets no reply (the chain comes back with length 0).
    case forget(node: UInt64, lookups: UInt64)
    case getattr(node: UInt64)
    case open(node: UInt64, flags: Int32)
    case read(node: UInt64, handle: UInt64, offset: UInt64, size: UInt32)
    /// The payload is the first `size` bytes of the slot's data area (`FuseClient.payload(slot:)`).
    case write(node: UInt64, handle: UInt64, offset: UInt64, size: UInt32)
    case create(parent: UInt64, name: String, flags: Int32, mode: UInt32)
    case release(node: UInt64, handle: UInt64, flags: Int32)
    case unlink(parent: UInt64, name: String)
    /// Any opcode with a hand-made body (after the header), for malformed-request tests.
    case raw(opcode: UInt32, node: UInt64, body: [UInt8], replyCapacity: Int)

    public var opcode: UInt32 {
        switch self {
        case .initialize: return FUSE_INIT.rawValue
        case .lookup: return FUSE_LOOKUP.rawValue
        case .forget: return FUSE_FORGET.rawValue
        case .getattr: return FUSE_GETATTR.rawValue
        case .open: return FUSE_OPEN.rawValue
        case .read: return FUSE_READ.rawValue
        case .write: return FUSE_WRITE.rawValue
        case .create: return FUSE_CREATE.rawValue
        case .release: return FUSE_RELEASE.rawValue
        case .unlink: return FUSE_UNLINK.rawValue
        case .raw(let opcode, _, _, _): return opcode
        }
    }

    /// FORGET (and BATCH_FORGET, INTERRUPT) travel on the hiprio queue.
    public var isHighPriority: Bool { if case .forget = self { return true } else { return false } }
}

/// A completed request. `payload` points into guest memory and stays valid until its slot is reused.
public struct FuseReply {
    public let slot: Int
    public let opcode: UInt32
    /// What the used ring reported the device wrote.
    public let usedLength: UInt32
    /// The reply header's fields; zero when no header came back (FORGET, dropped chains).
    public let headerLength: UInt32
    public let error: Int32
    public let unique: UInt64
    /// The bytes after the reply header.
    public let payload: UnsafeRawBufferPointer
    /// Nanoseconds from posting to reaping.
    public let latency: UInt64

    /// The payload as `T`, or nil when it is too short.
    public func decode<T: BitwiseCopyable>(_ type: T.Type) -> T? {
        guard payload.count >= MemoryLayout<T>.size else { return nil }
        return payload.loadUnaligned(as: T.self)
    }

    /// Throws the reply's error, if any.
    public func check() throws(FrontendError) {
        if error != 0 { throw .fuse(opcode: opcode, error: error) }
    }
}

/// A FUSE client over a `VhostUserFrontend`: builds requests in guest memory,
/// posts them on a request queue (FORGET on hiprio), and parses replies.
/// Up to `slotCount` requests may be in flight; each slot owns fixed buffers.
///
/// Not thread-safe: one thread drives a client.
public final class FuseClient {
    /// Room for the request header, op struct and a name.
    public static let headerArea = 4096

    public let frontend: VhostUserFrontend
    public let requestQueue: SplitQueue
    public let hiprioQueue: SplitQueue
    public let slotCount: Int
    public let maxData: Int
    /// Post chains through indirect descriptor tables (when negotiated).
    public var useIndirect = false
    /// What INIT negotiated; nil before `initialize()`.
    public private(set) var initReply: fuse_init_out?

    private struct Slot {
        var input: GuestBuffer
        var output: GuestBuffer
        var busy = false
        var opcode: UInt32 = 0
        var started: UInt64 = 0
    }

    private var slots: [Slot]
    private var slotOfRequestHead: [Int]
    private var slotOfHiprioHead: [Int]
    private var nextUnique: UInt64 = 1

    /// - Parameters:
    ///   - queue: the request queue to use (1 is the first).
    ///   - slots: how many requests may be in flight.
    ///   - maxData: the largest READ/WRITE payload.
    public init(frontend: VhostUserFrontend, queue: Int = 1, slots: Int = 16, maxData: Int = 1 << 20) throws(FrontendError) {
        guard queue >= 1, queue < frontend.queues.count else { throw .noRoom("no request queue \(queue); handshake first") }
        guard slots >= 1 else { throw .noRoom("slot count \(slots)") }
        self.frontend = frontend
        self.requestQueue = frontend.queues[queue]
        self.hiprioQueue = frontend.queues[0]
        self.slotCount = slots
        self.maxData = maxData
        var made: [Slot] = []
        for _ in 0..<slots {
            let input = try frontend.memory.allocate(Self.headerArea + maxData, alignment: 4096)
            let output = try frontend.memory.allocate(Self.headerArea + maxData, alignment: 4096)
            made.append(Slot(input: input, output: output))
        }
        self.slots = made
        slotOfRequestHead = [Int](repeating: -1, count: Int(requestQueue.size))
        slotOfHiprioHead = [Int](repeating: -1, count: Int(hiprioQueue.size))
    }

    /// Where a WRITE's payload goes before `start(.write(...), slot:)`.
    public func payload(slot: Int) -> UnsafeMutableRawBufferPointer {
        slots[slot].input.dropFirst(Self.headerArea).bytes
    }

    /// A slot with no request in flight, if any.
    public func freeSlot() -> Int? { slots.firstIndex { !$0.busy } }

    /// Requests posted and not yet completed.
    public var inFlight: Int { slots.reduce(0) { $0 + ($1.busy ? 1 : 0) } }

    // MARK: - Posting

    /// Builds `request` in `slot`'s buffers and posts it (kicking the backend).
    public func start(_ request: FuseRequest, slot: Int, kick: Bool = true) throws(FrontendError) {
        guard slot >= 0, slot < slots.count, !slots[slot].busy else { throw .noRoom("slot \(slot) is busy or out of range") }
        let s = slots[slot]
        let inp = s.input.pointer
        var bodyLength = 0
        var dataLength = 0
        var replyData = 0
        var replyCapacity = Self.headerArea - 16

        func put<T>(_ value: T) {
            withUnsafeBytes(of: value) { copyBytes($0, to: inp + 40 + bodyLength) }
            bodyLength += MemoryLayout<T>.size
        }
        func putName(_ name: String) throws(FrontendError) {
            let bytes = Array(name.utf8)
            guard 40 + bodyLength + bytes.count + 1 <= Self.headerArea else { throw .noRoom("name of \(bytes.count) bytes") }
            bytes.withUnsafeBytes { copyBytes($0, to: inp + 40 + bodyLength) }
            (inp + 40 + bodyLength + bytes.count).storeBytes(of: 0, as: UInt8.self)
            bodyLength += bytes.count + 1
        }

        var node: UInt64 = 0
        switch request {
        case .initialize(let maxReadahead, let flags):
            var body = fuse_init_in()
            body.major = UInt32(FUSE_KERNEL_VERSION)
            body.minor = UInt32(FUSE_KERNEL_MINOR_VERSION)
            body.max_readahead = maxReadahead
            body.flags = flags
            put(body)
        case .lookup(let parent, let name):
            node = parent
            try putName(name)
        case .forget(let n, let lookups):
            node = n
            put(fuse_forget_in(nlookup: lookups))
            replyCapacity = 0
        case .getattr(let n):
            node = n
            put(fuse_getattr_in())
        case .open(let n, let flags):
            node = n
            put(fuse_open_in(flags: UInt32(bitPattern: flags), open_flags: 0))
        case .read(let n, let handle, let offset, let size):
            guard Int(size) <= maxData else { throw .noRoom("READ of \(size) bytes, slot holds \(maxData)") }
            node = n
            var body = fuse_read_in()
            body.fh = handle
            body.offset = offset
            body.size = size
            put(body)
            replyData = Int(size)
        case .write(let n, let handle, let offset, let size):
            guard Int(size) <= maxData else { throw .noRoom("WRITE of \(size) bytes, slot holds \(maxData)") }
            // Oversized requests crash some backends (QEMU's virtiofsd asserts); refuse them here.
            if let limit = initReply?.max_write, size > limit { throw .noRoom("WRITE of \(size) bytes, backend's max_write is \(limit)") }
            node = n
            var body = fuse_write_in()
            body.fh = handle
            body.offset = offset
            body.size = size
            put(body)
            dataLength = Int(size)
        case .create(let parent, let name, let flags, let mode):
            node = parent
            put(fuse_create_in(flags: UInt32(bitPattern: flags), mode: mode, umask: 0o022, open_flags: 0))
            try putName(name)
        case .release(let n, let handle, let flags):
            node = n
            var body = fuse_release_in()
            body.fh = handle
            body.flags = UInt32(bitPattern: flags)
            put(body)
        case .unlink(let parent, let name):
            node = parent
            try putName(name)
        case .raw(_, let n, let body, let capacity):
            node = n
            guard 40 + body.count <= Self.headerArea, capacity <= Self.headerArea - 16 + maxData else {
                throw .noRoom("raw request too large")
            }
            body.withUnsafeBytes { copyBytes($0, to: inp + 40) }
            bodyLength = body.count
            replyCapacity = capacity
        }

        var header = fuse_in_header()
        header.len = UInt32(40 + bodyLength + dataLength)
        header.opcode = request.opcode
        header.unique = nextUnique
        nextUnique &+= 1
        header.nodeid = node
        header.pid = UInt32(bitPattern: Sys.processID)
        withUnsafeBytes(of: header) { copyBytes($0, to: inp) }

        var chain = [Descriptor(s.input.prefix(40 + bodyLength), writable: false)]
        if dataLength > 0 { chain.append(Descriptor(s.input.dropFirst(Self.headerArea).prefix(dataLength), writable: false)) }
        // The reply header sits just before the data area, so header + data are contiguous
        // whether the device sees one buffer or two (the kernel posts them separately).
        let replyStart = s.output.dropFirst(Self.headerArea - 16)
        if replyData > 0 {
            chain.append(Descriptor(replyStart.prefix(16), writable: true))
            chain.append(Descriptor(replyStart.dropFirst(16).prefix(replyData), writable: true))
        } else if replyCapacity > 0 {
            chain.append(Descriptor(replyStart.prefix(16 + replyCapacity), writable: true))
        }
        // Stale bytes must not pass for a reply the device never wrote.
        replyStart.pointer.initializeMemory(as: UInt8.self, repeating: 0, count: 16)

        let queue = request.isHighPriority ? hiprioQueue : requestQueue
        let indirect = useIndirect && frontend.ackedFeatures & VhostUserFrontend.featureIndirectDescriptors != 0
        slots[slot].started = Sys.monotonicNanoseconds()
        let head = try queue.submit(chain, indirect: indirect, kick: kick)
        if request.isHighPriority { slotOfHiprioHead[Int(head)] = slot } else { slotOfRequestHead[Int(head)] = slot }
        slots[slot].busy = true
        slots[slot].opcode = request.opcode
    }

    // MARK: - Completions

    /// Reaps both queues, sleeping until at least one request completes; calls `body` per reply.
    @discardableResult
    public func waitCompletions(timeoutMilliseconds: Int32 = 5000, _ body: (FuseReply) -> Void) throws(FrontendError) -> Int {
        let deadline = Sys.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while true {
            var n = reapQueue(requestQueue, hiprio: false, body)
            n += reapQueue(hiprioQueue, hiprio: true, body)
            if n > 0 { return n }
            let waiting = requestQueue.armForCall() || hiprioQueue.armForCall()
            if waiting { continue }
            let now = Sys.monotonicNanoseconds()
            guard now < deadline else { throw .timedOut("FUSE replies (\(inFlight) in flight)") }
            let left = Int32((deadline - now) / 1_000_000) + 1
            let fds = [requestQueue.callFD, hiprioQueue.callFD]
            let revents = try attempt("poll call eventfds") { () throws(Errno) in try Sys.pollReadable(fds, timeoutMilliseconds: left) }
            if revents[0] != 0 { requestQueue.drainCall() }
            if revents[1] != 0 { hiprioQueue.drainCall() }
        }
    }

    private func reapQueue(_ queue: SplitQueue, hiprio: Bool, _ body: (FuseReply) -> Void) -> Int {
        var count = 0
        queue.reap { element in
            let index = Int(element.head)
            let slot: Int
            if hiprio {
                guard index < slotOfHiprioHead.count, slotOfHiprioHead[index] >= 0 else { return }
                slot = slotOfHiprioHead[index]
                slotOfHiprioHead[index] = -1
            } else {
                guard index < slotOfRequestHead.count, slotOfRequestHead[index] >= 0 else { return }
                slot = slotOfRequestHead[index]
                slotOfRequestHead[index] = -1
            }
            let now = Sys.monotonicNanoseconds()
            let s = slots[slot]
            slots[slot].busy = false
            count += 1
            let replyStart = s.output.pointer + (Self.headerArea - 16)
            var headerLength: UInt32 = 0
            var error: Int32 = 0
            var unique: UInt64 = 0
            var payload = UnsafeRawBufferPointer(start: nil, count: 0)
            if element.length >= 16 {
                headerLength = replyStart.loadUnaligned(as: UInt32.self)
                error = replyStart.loadUnaligned(fromByteOffset: 4, as: Int32.self)
                unique = replyStart.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                let bodyLength = min(Int(element.length), s.output.count - (Self.headerArea - 16)) - 16
                payload = UnsafeRawBufferPointer(start: replyStart + 16, count: bodyLength)
            }
            body(FuseReply(slot: slot, opcode: s.opcode, usedLength: element.length, headerLength: headerLength,
                           error: error, unique: unique, payload: payload, latency: now &- s.started))
        }
        return count
    }

    // MARK: - One request at a time

    /// Posts `request` and waits for its reply. Other requests must not be in flight.
    /// The reply's payload stays valid until the next call.
    public func call(_ request: FuseRequest, timeoutMilliseconds: Int32 = 5000) throws(FrontendError) -> FuseReply {
        guard let slot = freeSlot() else { throw .noRoom("every slot is in flight") }
        try start(request, slot: slot)
        var result: FuseReply?
        while result == nil {
            try waitCompletions(timeoutMilliseconds: timeoutMilliseconds) { reply in
                if reply.slot == slot { result = reply }
            }
        }
        guard let reply = result else { throw .timedOut("reply") }
        return reply
    }

    private func callChecked<T: BitwiseCopyable>(_ request: FuseRequest, as type: T.Type) throws(FrontendError) -> T {
        let reply = try call(request)
        try reply.check()
        guard let value = reply.decode(T.self) else {
            throw .protocolViolation("reply to opcode \(request.opcode) has \(reply.payload.count) bytes")
        }
        return value
    }

    /// What a Linux guest asks for that matters here: MAX_PAGES, without which backends
    /// cap writes at 128 KiB, plus BIG_WRITES and ASYNC_READ.
    public static let defaultInitFlags: UInt32 = UInt32(FUSE_ASYNC_READ) | UInt32(FUSE_BIG_WRITES) | UInt32(FUSE_MAX_PAGES)

    /// FUSE_INIT; must come first. Returns the backend's answer.
    @discardableResult
    public func initialize(maxReadahead: UInt32 = 1 << 20, flags: UInt32 = FuseClient.defaultInitFlags) throws(FrontendError) -> fuse_init_out {
        let out = try callChecked(.initialize(maxReadahead: maxReadahead, flags: flags), as: fuse_init_out.self)
        initReply = out
        return out
    }

    public func lookup(parent: UInt64 = UInt64(FUSE_ROOT_ID), name: String) throws(FrontendError) -> fuse_entry_out {
        try callChecked(.lookup(parent: parent, name: name), as: fuse_entry_out.self)
    }

    /// FORGET has no reply: this returns once the backend hands the chain back.
    public func forget(node: UInt64, lookups: UInt64) throws(FrontendError) {
        _ = try call(.forget(node: node, lookups: lookups))
    }

    public func getattr(node: UInt64) throws(FrontendError) -> fuse_attr_out {
        try callChecked(.getattr(node: node), as: fuse_attr_out.self)
    }

    public func open(node: UInt64, flags: Int32 = O_RDONLY) throws(FrontendError) -> fuse_open_out {
        try callChecked(.open(node: node, flags: flags), as: fuse_open_out.self)
    }

    public func read(node: UInt64, handle: UInt64, offset: UInt64, size: UInt32) throws(FrontendError) -> [UInt8] {
        let reply = try call(.read(node: node, handle: handle, offset: offset, size: size))
        try reply.check()
        return Array(reply.payload)
    }

    /// Returns the byte count the backend reports written.
    public func write(node: UInt64, handle: UInt64, offset: UInt64, data: [UInt8]) throws(FrontendError) -> UInt32 {
        guard let slot = freeSlot() else { throw .noRoom("every slot is in flight") }
        guard data.count <= maxData else { throw .noRoom("WRITE of \(data.count) bytes") }
        let area = payload(slot: slot)
        if let destination = area.baseAddress { data.withUnsafeBytes { copyBytes($0, to: destination) } }
        let out = try callChecked(.write(node: node, handle: handle, offset: offset, size: UInt32(data.count)),
                                  as: fuse_write_out.self)
        return out.size
    }

    /// Returns the new entry and its open file.
    public func create(parent: UInt64 = UInt64(FUSE_ROOT_ID), name: String, flags: Int32 = O_RDWR,
                       mode: UInt32 = 0o644) throws(FrontendError) -> (entry: fuse_entry_out, open: fuse_open_out) {
        let reply = try call(.create(parent: parent, name: name, flags: flags, mode: mode))
        try reply.check()
        let e = MemoryLayout<fuse_entry_out>.size
        guard reply.payload.count >= e + MemoryLayout<fuse_open_out>.size else {
            throw .protocolViolation("CREATE reply has \(reply.payload.count) bytes")
        }
        return (reply.payload.loadUnaligned(as: fuse_entry_out.self),
                reply.payload.loadUnaligned(fromByteOffset: e, as: fuse_open_out.self))
    }

    public func release(node: UInt64, handle: UInt64, flags: Int32 = 0) throws(FrontendError) {
        try call(.release(node: node, handle: handle, flags: flags)).check()
    }

    public func unlink(parent: UInt64 = UInt64(FUSE_ROOT_ID), name: String) throws(FrontendError) {
        try call(.unlink(parent: parent, name: name)).check()
    }
}

/// Copies `source` to `destination`; empty sources (whose base may be nil) copy nothing.
@inline(__always)
func copyBytes(_ source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawPointer) {
    guard let base = source.baseAddress, source.count > 0 else { return }
    destination.copyMemory(from: base, byteCount: source.count)
}
