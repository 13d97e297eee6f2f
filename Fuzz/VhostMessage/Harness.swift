#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FuzzSupport
import Posix
import VhostUser

// The vhost-user message codec, fed through a real socket pair the way the
// frontend's messages arrive: the input is a byte stream of messages (header,
// payload, next header ...) sent in one go with `control & 15` descriptors
// attached to its first byte (one more than a message may carry is allowed, to
// reach the truncation path). Every decoded message that carries a memory table
// is also mapped, as the backend would. Invariants: nothing traps, the loop ends
// (the stream is finite and the sender's side is shut), and no received
// descriptor outlives its message (the lowest free descriptor is unchanged).

/// What the attached descriptors refer to: a small memfd standing in for guest RAM.
nonisolated(unsafe) private var backing: Int32 = -1

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzVhostMessage(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    if backing < 0 {
        guard let fd = try? Sys.memfdCreate("fuzz-guest-ram") else { fuzzFailure("memfd_create") }
        try? Sys.ftruncate(fd, 1 << 16)
        backing = fd
    }
    // Measured per input: libFuzzer's symbolizer may open descriptors between inputs.
    let baseline = lowestFreeDescriptor()
    var input = FuzzInput(UnsafeRawBufferPointer(start: data, count: size))
    let control = input.byte()
    let fdCount = Int(control & 0x0f) % (Int(CVFS_VHOST_USER_MAX_FDS) + 2)
    let codec = MessageCodec(queueCount: 1 + Int(control >> 4), maxQueueSize: 1024)
    let stream = input.rest()
    guard !stream.isEmpty, let (backend, frontend) = try? Sys.unixStreamSocketPair() else { return 0 }

    var sent = [Int32]()
    for _ in 0..<fdCount { if let fd = try? Sys.dup(backing) { sent.append(fd) } }
    let n = sent.withUnsafeBufferPointer {
        cvfs_send_with_fds(frontend, stream.baseAddress, stream.count, $0.baseAddress, Int32($0.count))
    }
    // The kernel holds its own references now.
    sent.forEach(Sys.close)
    Sys.close(frontend)
    if n != stream.count { fuzzFailure("socket took \(n) of \(stream.count) bytes") }

    var messages = 0
    while messages < 256 {
        messages += 1
        let message: Message?
        do { message = try codec.receive(from: backend) } catch { break }
        guard let message else { break }
        if case .setMemTable(let regions, let fds) = message.request {
            if let memory = try? GuestMemory(regions: regions, fds: fds) {
                if memory.regionCount != regions.count { fuzzFailure("mapped \(memory.regionCount) of \(regions.count) regions") }
                for r in regions {
                    // Translation only: the regions may be larger than the memfd.
                    _ = memory.translate(guestAddress: r.guestPhysicalAddress, length: r.size)
                    _ = memory.translate(frontendAddress: r.userspaceAddress &+ r.size &- 1, length: 1)
                }
            }
        }
        // Replies are built for the requests that have one.
        switch message.request {
        case .getFeatures, .getProtocolFeatures, .getQueueNum, .getMaxMemSlots:
            _ = MessageCodec.encodeReply(message.code, payload: MessageCodec.u64Payload(UInt64(messages)))
        case .getVringBase(let queue):
            _ = MessageCodec.encodeReply(message.code, payload: MessageCodec.vringStatePayload(queue: queue, num: 0))
        default:
            break
        }
        message.request.fds.forEach(Sys.close)
    }
    Sys.close(backend)
    let now = lowestFreeDescriptor()
    if now != baseline { fuzzFailure("descriptor leak: lowest free descriptor \(now), was \(baseline)") }
    return 0
}

#if !FUZZING
@main struct Replay {
    static func main() { exit(replayMain(fuzzVhostMessage, seeds: vhostSeeds, dictionary: {
        // Every request code, and the header flags (version 1, with and without NEED_REPLY).
        RequestCode.allCases.map { dictionaryEntry($0.name, withUnsafeBytes(of: $0.rawValue.littleEndian) { Array($0) }) }
            + [dictionaryEntry("flags_v1", [1, 0, 0, 0]), dictionaryEntry("flags_need_reply", [9, 0, 0, 0]),
               dictionaryEntry("no_fd", [0, 1, 0, 0, 0, 0, 0, 0])]
    })) }
}
#endif

/// Seed streams: the messages QEMU sends to bring up a device, and a few
/// that carry descriptors, with the descriptor count in the control byte.
func vhostSeeds() -> [(String, [UInt8])] {
    func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    func message(_ code: RequestCode, needReply: Bool = false, _ payload: [UInt8] = []) -> [UInt8] {
        le(code.rawValue) + le(UInt32(needReply ? 1 | 8 : 1)) + le(UInt32(payload.count)) + payload
    }
    func region(_ gpa: UInt64, _ size: UInt64, _ uva: UInt64, _ offset: UInt64) -> [UInt8] {
        le(gpa) + le(size) + le(uva) + le(offset)
    }
    let bringUp = message(.getFeatures) + message(.setOwner) + message(.getProtocolFeatures)
        + message(.setProtocolFeatures, le(UInt64(0x8003)))
        + message(.getQueueNum) + message(.setFeatures, le(UInt64(1) << 32 | 1 << 29))
        + message(.getMaxMemSlots)
        + message(.setVringNum, le(UInt32(1)) + le(UInt32(256)))
        + message(.setVringBase, le(UInt32(1)) + le(UInt32(0)))
        + message(.setVringAddr, le(UInt32(1)) + le(UInt32(0)) + le(UInt64(0x1000)) + le(UInt64(0x3000)) + le(UInt64(0x2000)) + le(UInt64(0)))
        + message(.setVringKick, le(UInt64(1) | 0x100))
        + message(.setVringCall, le(UInt64(1) | 0x100))
        + message(.setVringEnable, le(UInt32(1)) + le(UInt32(1)))
        + message(.getConfig, le(UInt32(0)) + le(UInt32(36)) + le(UInt32(0)) + [UInt8](repeating: 0, count: 36))
        + message(.setStatus, needReply: true, le(UInt64(15)))
        + message(.getVringBase, le(UInt32(1)) + le(UInt32(0)))
    let memTable = message(.setMemTable, le(UInt32(2)) + le(UInt32(0))
                           + region(0, 0x8000, 0x7f00_0000_0000, 0) + region(0x10_0000, 0x8000, 0x7f00_0001_0000, 0x8000))
    return [
        ("bring-up", [0x20] + bringUp),
        ("mem-table", [0x22] + memTable),
        ("add-rem-region", [0x01] + message(.addMemReg, le(UInt64(0)) + region(0, 0x1000, 0x5000, 0))
            + message(.remMemReg, le(UInt64(0)) + region(0, 0x1000, 0x5000, 0))),
        ("kick-fd", [0x21] + message(.setVringKick, le(UInt64(1)))),
        ("log-base", [0x01] + message(.setLogBase, le(UInt64(4096)) + le(UInt64(0)))),
        ("backend-fd", [0x01] + message(.setBackendReqFD)),
        ("too-many-fds", [0x09] + memTable),
    ]
}
