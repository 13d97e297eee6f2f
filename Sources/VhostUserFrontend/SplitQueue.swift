#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix
import Synchronization

/// One buffer of a descriptor chain, as the driver describes it. `address` is a
/// guest physical address and may be anything, including outside guest memory.
public struct Descriptor: Sendable, Equatable {
    public var address: UInt64
    public var length: UInt32
    /// Device-writable (a reply buffer) rather than device-readable.
    public var writable: Bool

    public init(address: UInt64, length: UInt32, writable: Bool) {
        self.address = address
        self.length = length
        self.writable = writable
    }

    public init(_ buffer: GuestBuffer, writable: Bool) {
        self.init(address: buffer.guestAddress, length: UInt32(truncatingIfNeeded: buffer.count), writable: writable)
    }
}

/// One descriptor-table entry written verbatim (for chains a well-behaved driver would never post).
public struct RawDescriptor: Sendable {
    public var address: UInt64
    public var length: UInt32
    public var flags: UInt16
    public var next: UInt16

    public init(address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        self.address = address
        self.length = length
        self.flags = flags
        self.next = next
    }
}

/// An entry of the used ring: which chain (its head index, the token `submit` returned)
/// and how many bytes the device wrote into its writable buffers.
public struct UsedElement: Sendable, Equatable {
    public let head: UInt16
    public let length: UInt32

    public init(head: UInt16, length: UInt32) {
        self.head = head
        self.length = length
    }
}

/// The driver side of one split virtqueue whose rings live in guest memory.
///
/// Not thread-safe: one thread submits and reaps.
public final class SplitQueue {
    public static let flagNext = CVFS_VRING_DESC_F_NEXT
    public static let flagWrite = CVFS_VRING_DESC_F_WRITE
    public static let flagIndirect = CVFS_VRING_DESC_F_INDIRECT
    /// Entries per indirect table (one table is reserved per head).
    public static let maxIndirectEntries = 16

    public let index: Int
    public let size: UInt16
    public let eventIndex: Bool
    public let kickFD: Int32
    public let callFD: Int32

    private let memory: GuestMemory
    /// The rings in guest memory (internal so tests can play the device).
    let descriptors: GuestBuffer
    let available: GuestBuffer
    let used: GuestBuffer
    let indirectTables: GuestBuffer

    private var freeList: [UInt16]
    /// Descriptors each posted head holds (0 when the head is not in flight).
    private var chainLength: [UInt16]
    private var availableIndex: UInt16 = 0
    private var lastUsedIndex: UInt16 = 0

    /// Chains posted and not yet seen on the used ring.
    public private(set) var inFlight = 0
    /// How many times we signalled the kick eventfd, and how many times we were called.
    public private(set) var kicks = 0
    public private(set) var calls = 0

    init(index: Int, size: UInt16, memory: GuestMemory, eventIndex: Bool) throws(FrontendError) {
        self.index = index
        self.size = size
        self.memory = memory
        self.eventIndex = eventIndex
        let n = Int(size)
        descriptors = try memory.allocate(16 * n, alignment: 4096)
        available = try memory.allocate(6 + 2 * n, alignment: 4096)
        used = try memory.allocate(6 + 8 * n, alignment: 4096)
        indirectTables = try memory.allocate(16 * Self.maxIndirectEntries * n, alignment: 4096)
        freeList = (0..<size).reversed()
        chainLength = [UInt16](repeating: 0, count: n)
        kickFD = try attempt("eventfd (kick)") { () throws(Errno) in try Sys.eventfd(flags: CVFS_EFD_CLOEXEC | CVFS_EFD_NONBLOCK) }
        do {
            callFD = try Sys.eventfd(flags: CVFS_EFD_CLOEXEC | CVFS_EFD_NONBLOCK)
        } catch {
            Sys.close(kickFD)
            throw .system(step: "eventfd (call)", error)
        }
    }

    func closeEventFDs() {
        Sys.close(kickFD)
        Sys.close(callFD)
    }

    /// Addresses for SET_VRING_ADDR: QEMU passes its own virtual addresses.
    var descriptorUserAddress: UInt64 { UInt64(UInt(bitPattern: descriptors.pointer)) }
    var availableUserAddress: UInt64 { UInt64(UInt(bitPattern: available.pointer)) }
    var usedUserAddress: UInt64 { UInt64(UInt(bitPattern: used.pointer)) }

    /// Descriptor-table slots not in use.
    public var freeDescriptors: Int { freeList.count }

    // MARK: - Posting

    /// Posts `readable` then `writable` buffers as one chain and kicks the backend
    /// (unless `kick` is false). With `indirect`, the chain lives in an indirect table
    /// and takes one ring slot. Returns the head index, which comes back in `UsedElement.head`.
    @discardableResult
    public func submit(readable: [GuestBuffer], writable: [GuestBuffer], indirect: Bool = false,
                       kick: Bool = true) throws(FrontendError) -> UInt16 {
        var chain: [Descriptor] = []
        chain.reserveCapacity(readable.count + writable.count)
        for b in readable { chain.append(Descriptor(b, writable: false)) }
        for b in writable { chain.append(Descriptor(b, writable: true)) }
        return try submit(chain, indirect: indirect, kick: kick)
    }

    /// Posts `chain` in order (the device expects readable buffers before writable ones).
    @discardableResult
    public func submit(_ chain: [Descriptor], indirect: Bool = false, kick: Bool = true) throws(FrontendError) -> UInt16 {
        guard !chain.isEmpty else { throw .noRoom("empty chain") }
        if indirect {
            guard chain.count <= Self.maxIndirectEntries else { throw .noRoom("indirect chain of \(chain.count)") }
            guard let head = freeList.popLast() else { throw .noRoom("queue \(index) is full") }
            let tableOffset = Int(head) * Self.maxIndirectEntries * 16
            let table = indirectTables.dropFirst(tableOffset)
            for (i, d) in chain.enumerated() {
                let last = i == chain.count - 1
                writeEntry(table.pointer + 16 * i, address: d.address, length: d.length,
                           flags: (d.writable ? Self.flagWrite : 0) | (last ? 0 : Self.flagNext),
                           next: last ? 0 : UInt16(i + 1))
            }
            writeEntry(descriptors.pointer + 16 * Int(head), address: table.guestAddress,
                       length: UInt32(16 * chain.count), flags: Self.flagIndirect, next: 0)
            chainLength[Int(head)] = 1
            publish(head: head, kick: kick)
            return head
        }
        guard chain.count <= freeList.count else { throw .noRoom("queue \(index): \(chain.count) descriptors, \(freeList.count) free") }
        var slots: [UInt16] = []
        slots.reserveCapacity(chain.count)
        for _ in chain { if let s = freeList.popLast() { slots.append(s) } }
        for (i, d) in chain.enumerated() {
            let last = i == chain.count - 1
            writeEntry(descriptors.pointer + 16 * Int(slots[i]), address: d.address, length: d.length,
                       flags: (d.writable ? Self.flagWrite : 0) | (last ? 0 : Self.flagNext),
                       next: last ? 0 : slots[i + 1])
        }
        chainLength[Int(slots[0])] = UInt16(chain.count)
        publish(head: slots[0], kick: kick)
        return slots[0]
    }

    /// Takes `count` free descriptor slots, lets `fill` write arbitrary entries for
    /// them (it gets the slot numbers, so it can point `next` anywhere), and posts the
    /// first as a head. For hostile-driver tests: the backend may never return it.
    @discardableResult
    public func submitRaw(count: Int, kick: Bool = true, _ fill: ([UInt16]) -> [RawDescriptor]) throws(FrontendError) -> UInt16 {
        guard count >= 1, count <= freeList.count else { throw .noRoom("raw chain of \(count)") }
        var slots: [UInt16] = []
        for _ in 0..<count { if let s = freeList.popLast() { slots.append(s) } }
        let entries = fill(slots)
        for (i, e) in entries.prefix(count).enumerated() {
            writeEntry(descriptors.pointer + 16 * Int(slots[i]), address: e.address, length: e.length, flags: e.flags, next: e.next)
        }
        // Freed later by following our own bookkeeping, never the raw next fields.
        rawSlots[Int(slots[0])] = slots
        chainLength[Int(slots[0])] = 0
        publish(head: slots[0], kick: kick)
        return slots[0]
    }

    private var rawSlots: [Int: [UInt16]] = [:]

    /// Signals the kick eventfd if the backend asked to be told (EVENT_IDX or the NO_NOTIFY flag)
    /// about any chain published since the last kick.
    public func kickIfNeeded() {
        let previous = availableIndexAtLastKick
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let needed: Bool
        if eventIndex {
            let availEvent = UInt16(littleEndian: used.pointer.loadUnaligned(fromByteOffset: 4 + 8 * Int(size), as: UInt16.self))
            needed = (availableIndex &- availEvent &- 1) < (availableIndex &- previous)
        } else {
            needed = UInt16(littleEndian: used.pointer.loadUnaligned(as: UInt16.self)) & CVFS_VRING_USED_F_NO_NOTIFY == 0
        }
        if needed { kick() }
        availableIndexAtLastKick = availableIndex
    }

    private var availableIndexAtLastKick: UInt16 = 0

    /// Signals the kick eventfd unconditionally.
    public func kick() {
        kicks += 1
        try? Sys.eventfdSignal(kickFD)
    }

    private func publish(head: UInt16, kick shouldKick: Bool) {
        let slot = Int(availableIndex % size)
        available.pointer.storeBytes(of: head.littleEndian, toByteOffset: 4 + 2 * slot, as: UInt16.self)
        availableIndex &+= 1
        // Release: the descriptors and ring slot are visible before the new index.
        storeReleasing16(available.pointer + 2, availableIndex.littleEndian)
        inFlight += 1
        if shouldKick { kickIfNeeded() }
    }

    private func writeEntry(_ p: UnsafeMutableRawPointer, address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        p.storeBytes(of: address.littleEndian, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        p.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    // MARK: - Completions

    /// The device's used index as last published.
    public var usedIndex: UInt16 { UInt16(littleEndian: loadAcquiring16(used.pointer + 2)) }

    /// Hands every new used entry to `body` and frees its descriptors; returns how many. Never blocks.
    @discardableResult
    public func reap(_ body: (UsedElement) -> Void) -> Int {
        var count = 0
        let end = usedIndex
        while lastUsedIndex != end {
            let slot = Int(lastUsedIndex % size)
            let entry = used.pointer + 4 + 8 * slot
            let id = UInt32(littleEndian: entry.loadUnaligned(as: UInt32.self))
            let length = UInt32(littleEndian: entry.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            lastUsedIndex &+= 1
            count += 1
            if id < UInt32(size) { release(head: UInt16(id)) }
            body(UsedElement(head: UInt16(truncatingIfNeeded: id), length: length))
        }
        return count
    }

    private func release(head: UInt16) {
        if let slots = rawSlots.removeValue(forKey: Int(head)) {
            freeList.append(contentsOf: slots)
            inFlight -= 1
            return
        }
        var n = chainLength[Int(head)]
        guard n > 0 else { return }  // not ours (a confused device): ignore
        chainLength[Int(head)] = 0
        inFlight -= 1
        var d = head
        while n > 0 {
            freeList.append(d)
            n -= 1
            if n > 0 {
                d = UInt16(littleEndian: descriptors.pointer.loadUnaligned(fromByteOffset: 16 * Int(d) + 14, as: UInt16.self))
            }
        }
    }

    /// Asks for a call on the next used entry (EVENT_IDX: publishes used_event) and
    /// reports whether entries are already waiting, in which case the caller should not sleep.
    public func armForCall() -> Bool {
        if eventIndex {
            storeReleasing16(available.pointer + 4 + 2 * Int(size), lastUsedIndex.littleEndian)
        }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return usedIndex != lastUsedIndex
    }

    /// Clears the call eventfd.
    public func drainCall() {
        if let n = try? Sys.eventfdDrain(callFD), n > 0 { calls += 1 }
    }

    /// Reaps, sleeping on the call eventfd until at least one entry arrives or the timeout passes.
    public func waitForUsed(timeoutMilliseconds: Int32 = 5000, _ body: (UsedElement) -> Void) throws(FrontendError) -> Int {
        let deadline = Sys.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while true {
            let n = reap(body)
            if n > 0 { return n }
            if armForCall() { continue }
            let now = Sys.monotonicNanoseconds()
            guard now < deadline else { throw .timedOut("used entries on queue \(index)") }
            let left = Int32((deadline - now) / 1_000_000) + 1
            let fd = callFD
            let revents = try attempt("poll call eventfd") { () throws(Errno) in try Sys.pollReadable([fd], timeoutMilliseconds: left) }
            if revents[0] != 0 { drainCall() }
        }
    }

    /// Collects used entries until `count` have arrived.
    public func waitForUsed(count: Int, timeoutMilliseconds: Int32 = 5000) throws(FrontendError) -> [UsedElement] {
        var result: [UsedElement] = []
        while result.count < count {
            _ = try waitForUsed(timeoutMilliseconds: timeoutMilliseconds) { result.append($0) }
        }
        return result
    }
}

@inline(__always)
func loadAcquiring16(_ p: UnsafeMutableRawPointer) -> UInt16 {
    p.assumingMemoryBound(to: Atomic<UInt16>.self).pointee.load(ordering: .acquiring)
}

@inline(__always)
func storeReleasing16(_ p: UnsafeMutableRawPointer, _ value: UInt16) {
    p.assumingMemoryBound(to: Atomic<UInt16>.self).pointee.store(value, ordering: .releasing)
}
