#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix

/// How the FUSE harnesses read an input:
///   byte 0: bits 0-2 pick the reply buffer size, bit 3 keeps each header's own
///           `len` (otherwise it is set to the bytes the request really has),
///           bit 4 leaves INIT to the input (otherwise the session starts with a
///           well-formed INIT offering every flag), bits 5-7 are the harness's own;
///   then requests back to back, each as long as its header's `len` says
///   (at least a header's worth, at most what is left).
/// Invariants checked for every reply: it fits the buffer, its header's `len`
/// is the length the dispatcher returned, its error is 0 or a negated errno,
/// and it answers the request's `unique`.
public enum FUSEDriver {
    static let replySizes = [0, 16, 40, 120, 4096, 1 << 16, 1 << 17, 1 << 21]

    public static func initRequest(unique: UInt64 = 1) -> [UInt8] {
        var arg = fuse_init_in()
        arg.major = 7
        arg.minor = 41
        arg.max_readahead = 131072
        // Every flag a 6.x kernel offers (bits 0-30 and 32-35, INIT_EXT among them).
        let flags: UInt64 = 0x0000_000F_7FFF_FFFF
        arg.flags = UInt32(truncatingIfNeeded: flags)
        arg.flags2 = UInt32(truncatingIfNeeded: flags >> 32)
        var h = fuse_in_header()
        h.len = UInt32(MemoryLayout<fuse_in_header>.size + MemoryLayout<fuse_init_in>.size)
        h.opcode = 26 // FUSE_INIT
        h.unique = unique
        return withUnsafeBytes(of: h) { Array($0) } + withUnsafeBytes(of: arg) { Array($0) }
    }

    /// Runs every request of `input` through `server`; returns the number of requests.
    @discardableResult
    public static func run<FS: FileSystem>(_ server: Server<FS>, _ input: inout FuzzInput) -> Int {
        let control = input.byte()
        let replySize = replySizes[Int(control & 7)]
        let keepLengths = control & 8 != 0
        let headerSize = MemoryLayout<fuse_in_header>.size
        var reply = UnsafeMutableRawBufferPointer.allocate(byteCount: max(replySize, 1), alignment: 16)
        defer { reply.deallocate() }
        reply = UnsafeMutableRawBufferPointer(rebasing: reply[0..<replySize])
        let request = UnsafeMutableRawBufferPointer.allocate(byteCount: max(input.remaining, 4096), alignment: 16)
        defer { request.deallocate() }

        if control & 16 == 0 {
            let initBytes = initRequest()
            initBytes.withUnsafeBytes { request.copyMemory(from: $0) }
            var big = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
            defer { big.deallocate() }
            _ = handleOne(server, UnsafeRawBufferPointer(rebasing: request[0..<initBytes.count]), &big)
        }
        var count = 0
        while !input.isEmpty && count < 64 {
            let declared = input.bytes.count - input.position >= 4
                ? Int(UInt32(littleEndian: input.bytes.loadUnaligned(fromByteOffset: input.position, as: UInt32.self)))
                : 0
            let length = min(max(declared, headerSize), input.remaining, request.count)
            let chunk = input.take(length)
            let bytes = UnsafeMutableRawBufferPointer(rebasing: request[0..<chunk.count])
            bytes.copyMemory(from: chunk)
            if !keepLengths && chunk.count >= 4 {
                bytes.storeBytes(of: UInt32(chunk.count).littleEndian, as: UInt32.self)
            }
            _ = handleOne(server, UnsafeRawBufferPointer(bytes), &reply)
            count += 1
        }
        return count
    }

    static func handleOne<FS: FileSystem>(_ server: Server<FS>, _ bytes: UnsafeRawBufferPointer,
                                          _ reply: inout UnsafeMutableRawBufferPointer) -> Int {
        var reader = MemoryReader(bytes)
        var writer = MemoryWriter(reply)
        let length = server.handle(&reader, &writer)
        if length > reply.count { fuzzFailure("reply of \(length) bytes in a \(reply.count)-byte buffer") }
        if length > 0 {
            if length < 16 { fuzzFailure("reply of \(length) bytes, shorter than its header") }
            let out = writer.bytes.loadUnaligned(as: fuse_out_header.self)
            if Int(out.len) != length { fuzzFailure("reply header says \(out.len) bytes, dispatcher returned \(length)") }
            if out.error > 0 || out.error <= -4096 { fuzzFailure("reply error \(out.error) is not a negated errno") }
            if out.error != 0 && length != 16 { fuzzFailure("error reply \(out.error) with \(length - 16) payload bytes") }
            if bytes.count >= 16 {
                let unique = bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
                if out.unique != unique { fuzzFailure("reply to \(out.unique) for request \(unique)") }
            }
        }
        return length
    }
}
