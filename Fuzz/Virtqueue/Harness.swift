#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FuzzSupport
import Posix
@testable import VhostUser

// The split-ring walker over fake guest memory (a memfd mapped through
// GuestMemory, as the daemon maps the frontend's). The input is
//   byte 0: queue size 2^(b & 7) (1..128), bit 3 EVENT_IDX, bit 4 indirect descriptors
//   byte 1: how the handler consumes each chain (read/skip step sizes)
//   then the descriptor table (16 bytes per entry), the available ring
//   (flags, idx, ring[], used_event), and the rest of guest memory: buffers
//   and indirect tables, which descriptors point at by guest address.
// Guest memory is `memorySize` bytes at guest-physical `guestBase`; the rings
// sit at fixed offsets in it. Bit 5 of byte 0 picks how the ring is consumed:
// drained as the queue thread does, or popped chain by chain with every result
// checked (see popOneByOne). Invariants: nothing traps or touches memory outside
// the mapping (ASan, and segments are read and written through), and a drain ends.

private let guestBase: UInt64 = 0x4_0000
private let memorySize = 1 << 16
private let descriptorOffset = 0
private let availableOffset = 0x1000
private let usedOffset = 0x2000
private let dataOffset = 0x3000

final class FakeGuestRAM {
    let fd: Int32
    let memory: GuestMemory
    let host: UnsafeMutableRawPointer

    init() {
        guard let fd = try? Sys.memfdCreate("fuzz-ring"), (try? Sys.ftruncate(fd, Int64(memorySize))) != nil,
              let memory = try? GuestMemory(
                regions: [MemoryRegionDescription(guestPhysicalAddress: guestBase, size: UInt64(memorySize),
                                                  userspaceAddress: guestBase, mmapOffset: 0)],
                fds: [fd]),
              let host = memory.translate(guestAddress: guestBase, length: UInt64(memorySize))
        else { fuzzFailure("fake guest memory") }
        self.fd = fd
        self.memory = memory
        self.host = host
    }
}

/// Reads the request in steps and fills the reply, touching every byte of both.
struct TouchingHandler: VirtqueueHandler {
    let step: Int
    func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32 {
        var scratch = [UInt8](repeating: 0, count: 512)
        var checksum: UInt8 = 0
        while reader.remaining > 0 {
            let n = min(step, reader.remaining)
            if step % 3 == 0 {
                guard reader.skip(n) else { fuzzFailure("skip \(n) with \(reader.remaining) remaining") }
                continue
            }
            let ok = scratch.withUnsafeMutableBytes { reader.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n])) }
            guard ok else { fuzzFailure("read \(n) with \(reader.remaining) remaining") }
            checksum &+= scratch[0]
        }
        if reader.read(into: UnsafeMutableRawBufferPointer(rebasing: scratch.withUnsafeMutableBytes { $0 }[0..<1])) {
            fuzzFailure("read past the readable buffers")
        }
        scratch = [UInt8](repeating: checksum, count: 512)
        while true {
            let room = writer.capacity - writer.written
            if room == 0 { break }
            let n = min(room, step, 512)
            let ok = scratch.withUnsafeBytes { writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            guard ok else { fuzzFailure("write \(n) with \(room) room") }
        }
        // Patch the first bytes again, as a reply header is.
        if writer.written >= 4 {
            _ = withUnsafeBytes(of: UInt32(writer.written)) { writer.overwrite($0, at: 0) }
        }
        // Claim more than was written: the queue must clamp it.
        return UInt32(truncatingIfNeeded: writer.written &+ step)
    }
}

nonisolated(unsafe) private var ram: FakeGuestRAM? = nil
nonisolated(unsafe) private var storage = UnsafeMutableBufferPointer<iovec>.allocate(
    capacity: SplitQueue.storageCapacity(queueSize: 128))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVirtqueue(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    if ram == nil { ram = FakeGuestRAM() }
    guard let ram else { return 0 }
    var input = FuzzInput(UnsafeRawBufferPointer(start: data, count: size))
    let control = input.byte()
    let queueSize = 1 << Int(control & 7)
    let eventIndex = control & 8 != 0
    let indirect = control & 16 != 0
    let step = 1 + Int(input.byte())

    // Lay the input into fresh guest memory.
    ram.host.initializeMemory(as: UInt8.self, repeating: 0, count: memorySize)
    func place(_ offset: Int, _ count: Int) {
        let part = input.take(count)
        if let base = part.baseAddress { (ram.host + offset).copyMemory(from: base, byteCount: part.count) }
    }
    place(descriptorOffset, RingPointers.descriptorTableSize(queueSize))
    place(availableOffset, RingPointers.availableRingSize(queueSize))
    place(dataOffset, memorySize - dataOffset)

    let addresses = VringAddresses(descriptorTable: guestBase + UInt64(descriptorOffset),
                                   usedRing: guestBase + UInt64(usedOffset),
                                   availableRing: guestBase + UInt64(availableOffset))
    guard let rings = try? RingPointers(addresses, size: queueSize, memory: ram.memory, queue: 1) else {
        fuzzFailure("rings inside memory were refused")
    }
    var queue = SplitQueue(size: queueSize, rings: rings, memory: ram.memory, eventIndex: eventIndex,
                           indirect: indirect, lastAvailable: 0, nextUsed: 0)
    let handler = TouchingHandler(step: step)
    if control & 32 == 0 {
        drainAsTheQueueThreadDoes(queue, handler)
    } else {
        popOneByOne(&queue, handler, ram, queueSize)
    }
    return 0
}

/// The kick eventfd of the harness's queue worker (never signalled: the worker is
/// driven by hand, without its thread).
nonisolated(unsafe) private var kickFD: Int32 = -1

/// What the queue thread does: the worker's own batch drain, called by hand. The
/// used ring is not checked afterwards: the guest's own buffers may overlap it, and
/// the handler then writes over it.
func drainAsTheQueueThreadDoes(_ queue: SplitQueue, _ handler: TouchingHandler) {
    if kickFD < 0 {
        guard let fd = try? Sys.eventfd() else { fuzzFailure("no eventfd for the queue worker") }
        kickFD = fd
    }
    let worker: QueueWorker<TouchingHandler>
    do {
        worker = try QueueWorker(queueIndex: 1, queue: queue, kickFD: kickFD, callFD: nil,
                                 handler: handler, logger: .discarding)
    } catch {
        fuzzFailure("queue worker: \(error)")
    }
    // Each drain returns after at most a ring's worth. More may follow when the
    // handler's writes land on the available ring (the guest's buffers may overlap
    // it), so the harness stops after a few; a corrupt index stops the queue: fine.
    for _ in 0..<4 where !worker.broken {
        worker.processBatch()
    }
}

/// Pops chains one at a time and checks what the walker reports: heads below the
/// queue size, segments that lie inside guest memory and add up to the byte
/// counts, and no more segments than the storage holds.
func popOneByOne(_ queue: inout SplitQueue, _ handler: TouchingHandler, _ ram: FakeGuestRAM, _ queueSize: Int) {
    let low = UInt(bitPattern: ram.host)
    let high = low + UInt(memorySize)
    // The available index covers at most one ring, but the handler's writes may move it.
    for _ in 0..<(4 * queueSize + 1) {
        let result: PopResult
        do { result = try queue.pop(into: storage) } catch { return }
        switch result {
        case .empty:
            return
        case .malformed(let head, _):
            if Int(head) >= queueSize { fuzzFailure("malformed chain head \(head) for a queue of \(queueSize)") }
            queue.push(head: head, length: 0)
        case .chain(let head, let rs, let rb, let ws, let wb):
            if Int(head) >= queueSize { fuzzFailure("chain head \(head) for a queue of \(queueSize)") }
            if rs + ws > storage.count { fuzzFailure("\(rs + ws) segments in storage for \(storage.count)") }
            var readable = 0, writable = 0
            for i in 0..<(rs + ws) {
                let v = storage[i]
                let start = UInt(bitPattern: v.iov_base)
                if v.iov_len == 0 || start < low || start + UInt(v.iov_len) > high {
                    fuzzFailure("segment \(i) of \(v.iov_len) bytes outside guest memory")
                }
                if i < rs { readable += v.iov_len } else { writable += v.iov_len }
            }
            if readable != rb || writable != wb {
                fuzzFailure("segments hold \(readable)/\(writable) bytes, walker says \(rb)/\(wb)")
            }
            guard let base = storage.baseAddress else { return }
            let used = handler.handleChain(queueIndex: 1, segments: base, readableSegments: rs, readableBytes: rb,
                                           writableSegments: ws, writableBytes: wb, detachTarget: nil) ?? 0
            if Int(used) > wb { fuzzFailure("used length \(used) beyond \(wb) writable bytes") }
            queue.push(head: head, length: used)
        }
    }
}

#if !FUZZING
@main struct Replay {
    static func main() { exit(replayMain(fuzzVirtqueue, seeds: virtqueueSeeds, dictionary: {
        // Guest addresses at the edges of memory, and descriptor flag words.
        let edges: [UInt64] = [guestBase, guestBase + UInt64(dataOffset), guestBase + UInt64(memorySize) - 16,
                               guestBase + UInt64(memorySize)]
        return edges.map { dictionaryEntry("address_\(String($0, radix: 16))", withUnsafeBytes(of: $0.littleEndian) { Array($0) }) }
            + (0..<8).map { dictionaryEntry("flags_\($0)", [UInt8($0), 0]) }
    })) }
}
#endif

/// Seed rings: a direct two-descriptor chain, an indirect table, a loop, and
/// a chain with a writable buffer before a readable one, each made available.
func virtqueueSeeds() -> [(String, [UInt8])] {
    func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    func descriptor(_ address: UInt64, _ length: UInt32, _ flags: UInt16, _ next: UInt16) -> [UInt8] {
        le(address) + le(length) + le(flags) + le(next)
    }
    let data = guestBase + UInt64(dataOffset)
    /// Control byte, handler step, descriptor table, available ring (flags, idx, ring, used_event), data.
    func input(sizeLog: UInt8, flags: UInt8, _ table: [[UInt8]], heads: [UInt16], data extra: [UInt8] = []) -> [UInt8] {
        let size = 1 << Int(sizeLog)
        var t = table.flatMap { $0 }
        t += [UInt8](repeating: 0, count: max(0, 16 * size - t.count))
        var ring: [UInt8] = le(UInt16(0)) + le(UInt16(heads.count))
        for head in heads { ring += le(head) }
        ring += [UInt8](repeating: 0, count: max(0, 2 * size - 2 * heads.count))
        ring += le(UInt16(0))
        return [sizeLog | flags, 7] + t + ring + extra
    }
    var many: [[UInt8]] = []
    for i in 0..<16 {
        let flags: UInt16 = i % 2 == 0 ? 1 : 2
        many.append(descriptor(data + UInt64(64 * i), 64, flags, UInt16(i + 1)))
    }
    return [
        ("direct", input(sizeLog: 3, flags: 0, [descriptor(data, 64, 1, 1), descriptor(data + 64, 128, 2, 0)], heads: [0])),
        ("indirect", input(sizeLog: 3, flags: 16, [descriptor(data, 48, 4, 0)], heads: [0],
                           data: descriptor(data + 256, 40, 1, 1) + descriptor(data + 512, 100, 1 | 2, 2)
                               + descriptor(data + 1024, 200, 2, 0))),
        ("direct-popped", input(sizeLog: 3, flags: 32, [descriptor(data, 64, 1, 1), descriptor(data + 64, 128, 2, 0)], heads: [0])),
        ("indirect-popped", input(sizeLog: 3, flags: 16 | 32, [descriptor(data, 48, 4, 0)], heads: [0, 0],
                                  data: descriptor(data + 256, 40, 1, 1) + descriptor(data + 512, 100, 1 | 2, 2)
                                      + descriptor(data + 1024, 200, 2, 0))),
        ("loop", input(sizeLog: 2, flags: 8, [descriptor(data, 8, 1, 1), descriptor(data, 8, 1, 0)], heads: [0, 1])),
        ("write-then-read", input(sizeLog: 2, flags: 0, [descriptor(data, 8, 3, 1), descriptor(data, 8, 0, 0)], heads: [0])),
        ("many", input(sizeLog: 4, flags: 24, many, heads: [0, 2, 4, 6, 8, 10, 12, 14])),
    ]
}
