import XCTest
import Glibc
import CVirtioFS
import Posix
@testable import VhostUser

/// Fake guest memory: one memfd region, mapped through `GuestMemory`.
/// Guest-physical addresses start at `guestBase`; the "frontend" sees the same
/// bytes at `frontendBase` (vring addresses use that space).
final class FakeGuest {
    static let guestBase: UInt64 = 0x10_0000
    static let frontendBase: UInt64 = 0x7f00_0000_0000
    let size: UInt64
    let fd: Int32
    let memory: GuestMemory
    var region: MemoryRegionDescription {
        MemoryRegionDescription(guestPhysicalAddress: FakeGuest.guestBase, size: size,
                                userspaceAddress: FakeGuest.frontendBase, mmapOffset: 0)
    }

    init(size: UInt64 = 1 << 20) throws {
        self.size = size
        fd = try Sys.memfdCreate("fake-guest")
        try Sys.ftruncate(fd, Int64(size))
        memory = try GuestMemory(
            regions: [MemoryRegionDescription(guestPhysicalAddress: FakeGuest.guestBase, size: size,
                                              userspaceAddress: FakeGuest.frontendBase, mmapOffset: 0)],
            fds: [fd])
    }

    deinit { Sys.close(fd) }

    /// Host pointer for guest-physical `address` (must be inside).
    func host(_ address: UInt64, _ length: UInt64 = 1) -> UnsafeMutableRawPointer {
        guard let p = memory.translate(guestAddress: address, length: length) else {
            XCTFail("test layout outside fake guest memory")
            return UnsafeMutableRawPointer(bitPattern: 0x1000).unsafelyUnwrapped
        }
        return p
    }

    func write(_ bytes: [UInt8], at address: UInt64) {
        bytes.withUnsafeBytes { host(address, UInt64(bytes.count)).copyMemory(from: $0.baseAddress.unsafelyUnwrapped, byteCount: bytes.count) }
    }

    func read(_ count: Int, at address: UInt64) -> [UInt8] {
        let p = host(address, UInt64(max(count, 1)))
        return (0..<count).map { p.load(fromByteOffset: $0, as: UInt8.self) }
    }
}

/// A split ring laid out in a `FakeGuest`, driven the way a guest driver would.
final class FakeRing {
    let guest: FakeGuest
    let size: Int
    // Guest-physical addresses of the rings and of a data area.
    let descriptorTable = FakeGuest.guestBase
    let availableRing = FakeGuest.guestBase + 0x4_0000
    let usedRing = FakeGuest.guestBase + 0x6_0000
    let dataArea = FakeGuest.guestBase + 0x8_0000
    var availableIndex: UInt16 = 0

    init(guest: FakeGuest, size: Int) {
        self.guest = guest
        self.size = size
    }

    /// Vring addresses as the frontend would send them (its own address space).
    var addresses: VringAddresses {
        let shift = FakeGuest.frontendBase &- FakeGuest.guestBase
        return VringAddresses(descriptorTable: descriptorTable &+ shift, usedRing: usedRing &+ shift,
                              availableRing: availableRing &+ shift)
    }

    func setDescriptor(_ index: Int, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0,
                       table: UInt64? = nil) {
        let p = guest.host((table ?? descriptorTable) + UInt64(16 * index), 16)
        p.storeBytes(of: address.littleEndian, as: UInt64.self)
        p.storeBytes(of: length.littleEndian, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: flags.littleEndian, toByteOffset: 12, as: UInt16.self)
        p.storeBytes(of: next.littleEndian, toByteOffset: 14, as: UInt16.self)
    }

    /// Puts `head` in the available ring and publishes the new index.
    func makeAvailable(_ head: UInt16) {
        let slot = Int(availableIndex) % size
        guest.host(availableRing + 4 + UInt64(2 * slot), 2).storeBytes(of: head.littleEndian, as: UInt16.self)
        availableIndex &+= 1
        setAvailableIndex(availableIndex)
    }

    func setAvailableIndex(_ value: UInt16) {
        guest.host(availableRing + 2, 2).storeBytes(of: value.littleEndian, as: UInt16.self)
    }

    func setAvailableFlags(_ value: UInt16) {
        guest.host(availableRing, 2).storeBytes(of: value.littleEndian, as: UInt16.self)
    }

    func setUsedEvent(_ value: UInt16) {
        guest.host(availableRing + 4 + UInt64(2 * size), 2).storeBytes(of: value.littleEndian, as: UInt16.self)
    }

    var usedIndex: UInt16 { guest.host(usedRing + 2, 2).load(as: UInt16.self).littleEndian }
    var availableEvent: UInt16 { guest.host(usedRing + 4 + UInt64(8 * size), 2).load(as: UInt16.self).littleEndian }

    func usedElement(_ slot: Int) -> (id: UInt32, length: UInt32) {
        let p = guest.host(usedRing + 4 + UInt64(8 * (slot % size)), 8)
        return (p.load(as: UInt32.self).littleEndian, p.load(fromByteOffset: 4, as: UInt32.self).littleEndian)
    }

    func makeQueue(eventIndex: Bool = false, indirect: Bool = true) throws -> SplitQueue {
        let rings = try RingPointers(addresses, size: size, memory: guest.memory, queue: 1)
        return SplitQueue(size: size, rings: rings, memory: guest.memory, eventIndex: eventIndex, indirect: indirect,
                          lastAvailable: 0, nextUsed: 0)
    }

    /// A queue thread's worker over this ring, not started: tests call `processBatch` themselves.
    func makeWorker<H: VirtqueueHandler>(_ handler: H, eventIndex: Bool = false, replies: LateReplies? = nil) throws -> QueueWorker<H> {
        try QueueWorker(queueIndex: 3, queue: makeQueue(eventIndex: eventIndex), kickFD: -1, callFD: nil,
                        replies: replies, handler: handler, logger: .discarding)
    }
}

/// Copies the request into the reply, prefixed by the queue index byte.
struct EchoHandler: VirtqueueHandler {
    func handle(queueIndex: Int, reader: inout ChainReader, writer: inout ChainWriter) -> UInt32 {
        var bytes = [UInt8](repeating: 0, count: reader.remaining)
        _ = bytes.withUnsafeMutableBytes { reader.read(into: $0) }
        _ = withUnsafeBytes(of: UInt8(queueIndex)) { writer.write($0) }
        _ = bytes.withUnsafeBytes { writer.write($0) }
        return UInt32(writer.written)
    }
}

/// The vhost-user frontend side of a socketpair.
struct FakeFrontend {
    let socket: Int32

    func send(_ code: UInt32, flags: UInt32 = 1, payload: [UInt8] = [], fds: [Int32] = []) {
        var bytes: [UInt8] = []
        for word in [code, flags, UInt32(payload.count)] {
            withUnsafeBytes(of: word.littleEndian) { bytes.append(contentsOf: $0) }
        }
        bytes += payload
        let n = bytes.withUnsafeBytes { raw in
            fds.withUnsafeBufferPointer { cvfs_send_with_fds(socket, raw.baseAddress, raw.count, $0.baseAddress, Int32($0.count)) }
        }
        XCTAssertEqual(n, bytes.count)
    }

    func send(_ code: RequestCode, needReply: Bool = false, payload: [UInt8] = [], fds: [Int32] = []) {
        send(code.rawValue, flags: needReply ? 1 | 8 : 1, payload: payload, fds: fds)
    }

    /// Reads one reply: (request, flags, payload); nil when the backend closed the connection.
    func receive() -> (UInt32, UInt32, [UInt8])? {
        var header = [UInt8](repeating: 0, count: 12)
        guard readExactly(&header) else { return nil }
        let words = header.withUnsafeBytes { raw in
            (0..<3).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) }
        }
        var payload = [UInt8](repeating: 0, count: Int(words[2]))
        guard readExactly(&payload) else { return nil }
        return (words[0], words[1], payload)
    }

    func receiveU64(_ code: RequestCode, file: StaticString = #filePath, line: UInt = #line) -> UInt64? {
        guard let (request, flags, payload) = receive() else {
            XCTFail("connection closed instead of a reply", file: file, line: line)
            return nil
        }
        XCTAssertEqual(request, code.rawValue, file: file, line: line)
        XCTAssertEqual(flags, 1 | 4, "version 1 with the REPLY flag", file: file, line: line)
        XCTAssertEqual(payload.count, 8, file: file, line: line)
        guard payload.count == 8 else { return nil }
        return payload.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }

    private func readExactly(_ buffer: inout [UInt8]) -> Bool {
        var done = 0
        while done < buffer.count {
            let n = buffer.withUnsafeMutableBytes { Glibc.recv(socket, $0.baseAddress.unsafelyUnwrapped + done, $0.count - done, 0) }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}

func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    withUnsafeBytes(of: value.littleEndian) { Array($0) }
}

func regionPayload(_ r: MemoryRegionDescription) -> [UInt8] {
    le(r.guestPhysicalAddress) + le(r.size) + le(r.userspaceAddress) + le(r.mmapOffset)
}

/// Number of fds open in this process (to prove received fds get closed).
func openFDCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// Waits (bounded, generously) until `fd` is readable.
func waitReadable(_ fd: Int32, seconds: Int32 = 20) -> Bool {
    var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    return Glibc.poll(&p, 1, seconds * 1000) == 1
}

/// iovec room for one chain, for tests that pop chains by hand (never freed).
nonisolated(unsafe) private let testChainStorage =
    UnsafeMutableBufferPointer<iovec>.allocate(capacity: SplitQueue.maxIndirectSegments * 4)

extension SplitQueue {
    /// `pop(into:)` with the tests' shared storage.
    mutating func pop() throws(RingError) -> PopResult { try pop(into: storage) }
    var storage: UnsafeMutableBufferPointer<iovec> {
        UnsafeMutableBufferPointer(rebasing: testChainStorage[0..<SplitQueue.storageCapacity(queueSize: size)])
    }
}
