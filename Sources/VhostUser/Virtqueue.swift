#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import CVirtioFS
import Posix

/// The three ring addresses of a split virtqueue, in the frontend's address space.
public struct VringAddresses: Equatable, Sendable {
    public var descriptorTable: UInt64
    public var usedRing: UInt64
    public var availableRing: UInt64
    /// VHOST_VRING_F_LOG: log writes to the used ring at `logGuestAddress` (migration).
    public var logUsedRing: Bool
    /// Guest-physical address of the used ring, for the dirty log.
    public var logGuestAddress: UInt64

    public init(descriptorTable: UInt64, usedRing: UInt64, availableRing: UInt64,
                logUsedRing: Bool = false, logGuestAddress: UInt64 = 0) {
        self.descriptorTable = descriptorTable
        self.usedRing = usedRing
        self.availableRing = availableRing
        self.logUsedRing = logUsedRing
        self.logGuestAddress = logGuestAddress
    }
}

/// Host pointers to the rings of one queue, each checked to lie wholly in
/// guest memory for the queue's size.
struct RingPointers {
    var descriptors: UnsafeMutableRawPointer
    var available: UnsafeMutableRawPointer
    var used: UnsafeMutableRawPointer

    static func descriptorTableSize(_ size: Int) -> Int { 16 * size }
    /// flags, idx, ring[size], used_event.
    static func availableRingSize(_ size: Int) -> Int { 6 + 2 * size }
    /// flags, idx, ring[size] of (id, len), avail_event.
    static func usedRingSize(_ size: Int) -> Int { 6 + 8 * size }

    /// Translates and checks the three rings of queue `queue` with `size` entries.
    init(_ a: VringAddresses, size: Int, memory: GuestMemory, queue: Int) throws(VhostUserError) {
        func ring(_ address: UInt64, _ length: Int, _ alignment: Int, _ name: String) throws(VhostUserError) -> UnsafeMutableRawPointer {
            guard let p = memory.translate(frontendAddress: address, length: UInt64(length)) else {
                throw .ringOutsideMemory(queue: queue, ring: name, address: address, length: length)
            }
            // Atomics on the ring need natural alignment; the spec demands it anyway.
            guard Int(bitPattern: p) % alignment == 0 else {
                throw .ringMisaligned(queue: queue, ring: name, address: address)
            }
            return p
        }
        descriptors = try ring(a.descriptorTable, RingPointers.descriptorTableSize(size), 16, "descriptor table")
        available = try ring(a.availableRing, RingPointers.availableRingSize(size), 2, "available ring")
        used = try ring(a.usedRing, RingPointers.usedRingSize(size), 4, "used ring")
    }
}

/// Why a chain was rejected; the chain is returned with used length 0.
enum ChainError: Error, Equatable, CustomStringConvertible {
    case descriptorIndexOutOfRange(UInt16)
    case bufferOutsideMemory(address: UInt64, length: UInt32)
    case chainTooLong
    case readableAfterWritable
    case indirectInIndirect
    case secondIndirect
    case indirectWithNext
    case indirectBadLength(UInt32)
    case indirectNotNegotiated
    case tooLarge

    var description: String {
        switch self {
        case .descriptorIndexOutOfRange(let i): return "descriptor index \(i) out of range"
        case .bufferOutsideMemory(let a, let l): return "buffer 0x\(String(a, radix: 16)) (\(l) bytes) outside guest memory"
        case .chainTooLong: return "chain longer than the queue (a loop?)"
        case .readableAfterWritable: return "device-readable descriptor after a writable one"
        case .indirectInIndirect: return "indirect descriptor inside an indirect table"
        case .secondIndirect: return "more than one indirect descriptor in a chain"
        case .indirectWithNext: return "indirect descriptor with NEXT set"
        case .indirectBadLength(let l): return "indirect table length \(l) is not a non-zero multiple of 16"
        case .indirectNotNegotiated: return "indirect descriptor without RING_INDIRECT_DESC"
        case .tooLarge: return "chain's total length overflows"
        }
    }
}

/// What `pop` found.
enum PopResult: Equatable {
    /// A chain: head index, and how the iovec storage splits into readable then writable segments.
    case chain(head: UInt16, readableSegments: Int, readableBytes: Int, writableSegments: Int, writableBytes: Int)
    /// A bad chain to return with length 0.
    case malformed(head: UInt16, ChainError)
    case empty
}

/// Indices that make no sense: the queue stops until the frontend resets it.
enum RingError: Error, Equatable, CustomStringConvertible {
    case availableIndexJump(available: UInt16, lastSeen: UInt16, size: Int)
    case headOutOfRange(head: UInt16, size: Int)

    var description: String {
        switch self {
        case .availableIndexJump(let a, let l, let s):
            return "available index \(a) is more than the queue size \(s) ahead of \(l)"
        case .headOutOfRange(let h, let s):
            return "chain head \(h) is not below the queue size \(s)"
        }
    }
}

/// A split virtqueue's device side, walking rings that live in guest memory.
/// Owned by one thread at a time (its queue thread while running).
struct SplitQueue {
    let size: Int
    let rings: RingPointers
    let memory: GuestMemory
    let eventIndex: Bool
    let indirect: Bool
    /// Next available-ring slot to consume.
    var lastAvailable: UInt16
    /// Next used-ring slot to fill.
    var nextUsed: UInt16
    /// Set while the frontend logs dirty pages (migration); nil costs one branch per write.
    var dirtyLog: QueueDirtyLog?

    static let descriptorFlagNext = CVFS_VRING_DESC_F_NEXT
    static let descriptorFlagWrite = CVFS_VRING_DESC_F_WRITE
    static let descriptorFlagIndirect = CVFS_VRING_DESC_F_INDIRECT
    static let availableFlagNoInterrupt = CVFS_VRING_AVAIL_F_NO_INTERRUPT

    init(size: Int, rings: RingPointers, memory: GuestMemory, eventIndex: Bool, indirect: Bool,
         lastAvailable: UInt16, nextUsed: UInt16) {
        self.size = size
        self.rings = rings
        self.memory = memory
        self.eventIndex = eventIndex
        self.indirect = indirect
        self.lastAvailable = lastAvailable
        self.nextUsed = nextUsed
    }

    /// Most buffers one chain may have. A direct chain is bounded by the queue
    /// size; an indirect table may be longer than the queue (Linux uses that
    /// for large requests on small queues), up to this bound, which matches
    /// IOV_MAX so each side of a chain fits one preadv/pwritev.
    static let maxIndirectSegments = 1024

    /// Storage a queue of `size` needs: the longest chain we accept.
    static func storageCapacity(queueSize: Int) -> Int { max(queueSize, maxIndirectSegments) }

    @inline(__always)
    private func atomic16(_ p: UnsafeMutableRawPointer) -> UnsafeMutablePointer<Atomic<UInt16>> {
        p.assumingMemoryBound(to: Atomic<UInt16>.self)
    }

    /// avail.idx, acquire: the entries it covers are visible after this load.
    var availableIndex: UInt16 {
        UInt16(littleEndian: atomic16(rings.available + 2).pointee.load(ordering: .acquiring))
    }

    var availableFlags: UInt16 {
        UInt16(littleEndian: atomic16(rings.available).pointee.load(ordering: .relaxed))
    }

    /// The driver's used_event (trailing field of the available ring).
    var usedEvent: UInt16 {
        UInt16(littleEndian: atomic16(rings.available + 4 + 2 * size).pointee.load(ordering: .relaxed))
    }

    /// Publishes avail_event (trailing field of the used ring): kick us when this slot fills.
    func setAvailableEvent(_ value: UInt16) {
        atomic16(rings.used + 4 + 8 * size).pointee.store(value.littleEndian, ordering: .relaxed)
        dirtyLog?.markUsedRing(offset: 4 + 8 * size, length: 2)
    }

    /// Chains the driver made available that we have not consumed yet.
    var pendingCount: Int { Int(availableIndex &- lastAvailable) }

    /// Next chain, if the driver made one available, walked into `segments`
    /// (readable segments first, then writable ones), which should hold
    /// `storageCapacity(queueSize:)` entries. Throws when the indices themselves
    /// are corrupt (the caller stops the queue).
    mutating func pop(into segments: UnsafeMutableBufferPointer<iovec>) throws(RingError) -> PopResult {
        let available = availableIndex
        let pending = available &- lastAvailable
        if pending == 0 { return .empty }
        guard Int(pending) <= size else {
            throw .availableIndexJump(available: available, lastSeen: lastAvailable, size: size)
        }
        // size is a power of two, so the slot wraps with the 16-bit index.
        let slot = Int(lastAvailable) & (size - 1)
        let headRaw = atomic16(rings.available + 4 + 2 * slot).pointee.load(ordering: .relaxed)
        let head = UInt16(littleEndian: headRaw)
        guard Int(head) < size else { throw .headOutOfRange(head: head, size: size) }
        lastAvailable &+= 1
        switch walk(head: head, into: segments) {
        case .success(let r): return r
        case .failure(let e): return .malformed(head: head, e)
        }
    }

    /// One descriptor, copied out of guest memory before it is looked at.
    private struct Descriptor {
        var address: UInt64
        var length: UInt32
        var flags: UInt16
        var next: UInt16
    }

    @inline(__always)
    private func loadDescriptor(_ table: UnsafeMutableRawPointer, _ index: Int) -> Descriptor {
        let p = table + 16 * index
        return Descriptor(address: UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)),
                          length: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)),
                          flags: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self)),
                          next: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self)))
    }

    /// Walks the chain at `head` into `storage`, checking every rule.
    private func walk(head: UInt16, into storage: UnsafeMutableBufferPointer<iovec>) -> Result<PopResult, ChainError> {
        // The longest legal chain, whatever room the caller gave.
        let limit = min(storage.count, SplitQueue.storageCapacity(queueSize: size))
        var table = rings.descriptors
        var tableSize = size
        var index = Int(head)
        // Time to live: a chain visits at most as many descriptors as its table has.
        var ttl = size
        var inIndirect = false
        var usedIndirect = false
        var segments = 0
        var readableSegments = 0
        var readableBytes = 0
        var writableBytes = 0
        var sawWritable = false
        while true {
            guard ttl > 0 else { return .failure(.chainTooLong) }
            ttl -= 1
            let d = loadDescriptor(table, index)
            if d.flags & SplitQueue.descriptorFlagIndirect != 0 {
                guard indirect else { return .failure(.indirectNotNegotiated) }
                guard !inIndirect else { return .failure(.indirectInIndirect) }
                guard !usedIndirect else { return .failure(.secondIndirect) }
                guard d.flags & SplitQueue.descriptorFlagNext == 0 else { return .failure(.indirectWithNext) }
                guard d.length > 0, d.length % 16 == 0 else { return .failure(.indirectBadLength(d.length)) }
                let count = Int(d.length / 16)
                guard count <= limit else { return .failure(.chainTooLong) }
                guard let p = memory.translate(guestAddress: d.address, length: UInt64(d.length)) else {
                    return .failure(.bufferOutsideMemory(address: d.address, length: d.length))
                }
                table = p
                tableSize = count
                index = 0
                ttl = count
                inIndirect = true
                usedIndirect = true
                continue
            }
            let writable = d.flags & SplitQueue.descriptorFlagWrite != 0
            if writable {
                sawWritable = true
            } else if sawWritable {
                return .failure(.readableAfterWritable)
            }
            if d.length > 0 {
                guard let p = memory.translate(guestAddress: d.address, length: UInt64(d.length)) else {
                    return .failure(.bufferOutsideMemory(address: d.address, length: d.length))
                }
                guard segments < limit else { return .failure(.chainTooLong) }
                storage[segments] = iovec(iov_base: p, iov_len: Int(d.length))
                segments += 1
                // Lengths are u32 and segments bounded by the storage, but stay checked.
                if writable {
                    let (sum, o) = writableBytes.addingReportingOverflow(Int(d.length))
                    guard !o else { return .failure(.tooLarge) }
                    writableBytes = sum
                } else {
                    readableSegments += 1
                    let (sum, o) = readableBytes.addingReportingOverflow(Int(d.length))
                    guard !o else { return .failure(.tooLarge) }
                    readableBytes = sum
                }
            }
            guard d.flags & SplitQueue.descriptorFlagNext != 0 else { break }
            guard Int(d.next) < tableSize else { return .failure(.descriptorIndexOutOfRange(d.next)) }
            index = Int(d.next)
        }
        return .success(.chain(head: head, readableSegments: readableSegments, readableBytes: readableBytes,
                               writableSegments: segments - readableSegments, writableBytes: writableBytes))
    }

    /// Returns chain `head` to the driver with `length` bytes written.
    mutating func push(head: UInt16, length: UInt32) {
        let slot = Int(nextUsed) & (size - 1)
        let element = rings.used + 4 + 8 * slot
        element.storeBytes(of: UInt32(head).littleEndian, as: UInt32.self)
        element.storeBytes(of: length.littleEndian, toByteOffset: 4, as: UInt32.self)
        nextUsed &+= 1
        // Release: the element (and the data written to the buffers) is visible before the index.
        atomic16(rings.used + 2).pointee.store(nextUsed.littleEndian, ordering: .releasing)
        if let log = dirtyLog {
            log.markUsedRing(offset: 4 + 8 * slot, length: 8)
            log.markUsedRing(offset: 2, length: 2)
        }
    }

    /// Whether the driver wants an interrupt now that used.idx moved from `oldUsed` to `nextUsed`.
    func needsNotification(since oldUsed: UInt16) -> Bool {
        // Our used.idx store must be visible before we read the driver's suppression state.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if eventIndex {
            // vring_need_event: did used.idx step over used_event in this batch?
            let event = usedEvent
            return (nextUsed &- event &- 1) < (nextUsed &- oldUsed)
        }
        return availableFlags & SplitQueue.availableFlagNoInterrupt == 0
    }

    /// Most chains one drain takes: one ring's worth. A driver that keeps the ring
    /// full would otherwise hold the queue thread in `drain` forever, deaf to a stop.
    static func maxChainsPerDrain(queueSize: Int) -> Int { max(queueSize, 1) }

    /// Called when the ring looked empty. With EVENT_IDX, publishes avail_event so
    /// the driver kicks for its next chain, then looks once more: a chain made
    /// available before the driver could see avail_event brings no kick. True when
    /// such chains wait (drain again); false when the caller may sleep.
    func rearmAndLookAgain() -> Bool {
        guard eventIndex else { return false }
        setAvailableEvent(lastAvailable)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return availableIndex != lastAvailable
    }
}

extension VirtqueueHandler {
    /// Hands one walked chain to `handle`: its readable segments start at `segments`,
    /// its writable ones follow them. Returns the used length for the used ring,
    /// never more than the writable buffers hold, whatever the handler claims;
    /// nil when the handler detached the chain (it is pushed later, by `LateReplies`).
    @inline(__always)
    func handleChain(queueIndex: Int, segments: UnsafeMutablePointer<iovec>,
                     readableSegments: Int, readableBytes: Int,
                     writableSegments: Int, writableBytes: Int, detachTarget: DetachTarget?,
                     dirtyLog: QueueDirtyLog? = nil) -> UInt32? {
        var reader = ChainReader(segments: segments, count: readableSegments, total: readableBytes)
        var writer = ChainWriter(segments: segments + readableSegments, count: writableSegments, total: writableBytes,
                                 detachTarget: detachTarget)
        let used = handle(queueIndex: queueIndex, reader: &reader, writer: &writer)
        // Every byte the writer put into guest memory (READ data, READDIR entries, replies);
        // a detached chain's reply is written, and marked, later by `LateReplies.complete`.
        if let dirtyLog { dirtyLog.markWritten(segments: segments + readableSegments, count: writableSegments, bytes: writer.written) }
        if writer.isDetached { return nil }
        return min(used, UInt32(clamping: writableBytes))
    }
}
