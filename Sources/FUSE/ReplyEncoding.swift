import CVirtioFS
import Posix

// Writing a reply: a `fuse_out_header` whose length is exactly the bytes that follow
// it, then the payload. A reply that does not fit the writer is not written at all
// (length 0: the transport returns the request with nothing in it), never half.

extension Server {
    static func header(_ length: Int, _ error: Int32, _ unique: UInt64) -> fuse_out_header {
        fuse_out_header(len: UInt32(length), error: error, unique: unique)
    }

    /// An error reply: just the header. If something was already written (READ's
    /// header), the header is rewritten in place and the rest is ignored.
    static func replyError<W: FuseWriter>(_ e: Errno, _ unique: UInt64, _ w: inout W, start: Int) -> Int {
        var out = header(FuseWire.outHeaderSize, -e.rawValue, unique)
        let done = withUnsafeBytes(of: &out) { bytes in
            w.written == start ? w.write(bytes) : w.overwrite(bytes, at: start)
        }
        return done ? FuseWire.outHeaderSize : 0
    }

    /// Success with no payload.
    static func replyEmpty<W: FuseWriter>(_ unique: UInt64, _ w: inout W) -> Int {
        w.writeWire(header(FuseWire.outHeaderSize, 0, unique)) ? FuseWire.outHeaderSize : 0
    }

    /// Success with one reply struct.
    static func reply<T, W: FuseWriter>(_ payload: T, _ unique: UInt64, _ w: inout W) -> Int {
        let total = FuseWire.outHeaderSize + MemoryLayout<T>.size
        // Check first so a too-small writer gets nothing rather than half a reply.
        guard w.available >= total else { return 0 }
        guard w.writeWire(header(total, 0, unique)), w.writeWire(payload) else { return 0 }
        return total
    }

    /// Success with two reply structs back to back (CREATE and TMPFILE: entry, then open).
    static func reply<T, U, W: FuseWriter>(_ a: T, _ b: U, _ unique: UInt64, _ w: inout W) -> Int {
        let total = FuseWire.outHeaderSize + MemoryLayout<T>.size + MemoryLayout<U>.size
        guard w.available >= total else { return 0 }
        guard w.writeWire(header(total, 0, unique)), w.writeWire(a), w.writeWire(b) else { return 0 }
        return total
    }

    /// Success with bytes of a length known only now (a symlink target, directory records, an xattr).
    static func replyBytes<W: FuseWriter>(_ payload: UnsafeRawBufferPointer, _ unique: UInt64, _ w: inout W) -> Int {
        let total = FuseWire.outHeaderSize + payload.count
        guard w.available >= total else { return 0 }
        guard w.writeWire(header(total, 0, unique)), w.write(payload) else { return 0 }
        return total
    }

    /// Fills in a header written ahead of its payload.
    static func finishHeader<W: FuseWriter>(_ out: fuse_out_header, _ w: inout W, start: Int) -> Int {
        var copy = out
        let done = withUnsafeBytes(of: &copy) { w.overwrite($0, at: start) }
        let length = Int(out.len)
        assert(!done || w.written - start == length, "reply header length disagrees with the bytes written")
        return done ? length : 0
    }
}

extension FuseWriter {
    /// Bytes a reply's payload may take after its header; nil if not even the header fits.
    @inline(__always)
    var payloadRoom: Int? {
        available >= FuseWire.outHeaderSize ? available - FuseWire.outHeaderSize : nil
    }

    /// Writes one fixed-layout wire struct (see `FuseReader.readWire` for why T is unconstrained).
    @inline(__always)
    mutating func writeWire<T>(_ value: T) -> Bool {
        assert(_isPOD(T.self), "wire structs are plain data")
        var copy = value
        return withUnsafeBytes(of: &copy) { write($0) }
    }
}
