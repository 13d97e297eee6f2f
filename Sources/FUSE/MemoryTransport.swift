#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

/// A `FuseReader` over one contiguous buffer: a /dev/fuse read buffer, or a test's bytes.
/// The buffer must outlive the reader; the reader never writes to it.
public struct MemoryReader: FuseReader {
    @usableFromInline let base: UnsafeRawPointer?
    @usableFromInline let count: Int
    @usableFromInline var position = 0

    public init(_ buffer: UnsafeRawBufferPointer) {
        base = buffer.baseAddress
        count = buffer.count
    }

    /// Bytes consumed so far.
    public var consumed: Int { position }

    public var remaining: Int { count - position }

    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard buffer.count <= remaining else { return false }
        if buffer.count > 0, let base, let target = buffer.baseAddress {
            target.copyMemory(from: base + position, byteCount: buffer.count)
        }
        position += buffer.count
        return true
    }

    public mutating func skip(_ n: Int) -> Bool {
        guard n >= 0, n <= remaining else { return false }
        position += n
        return true
    }

    public mutating func withIOVecs<E: Error>(
        count n: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int
    ) throws(E) -> Int? {
        guard n >= 0, n <= remaining else { return nil }
        var vector = iovec(iov_base: base.map { UnsafeMutableRawPointer(mutating: $0 + position) }, iov_len: n)
        let used = try withUnsafePointer(to: &vector) { (p) throws(E) -> Int in
            try body(UnsafeBufferPointer(start: p, count: 1))
        }
        // A body that claims more than it was given must not move the cursor past the data.
        let advance = min(max(used, 0), n)
        position += advance
        return advance
    }
}

/// A `FuseWriter` over one contiguous buffer: a /dev/fuse reply buffer, or a test's bytes.
public struct MemoryWriter: FuseWriter {
    @usableFromInline let base: UnsafeMutableRawPointer?
    public let capacity: Int
    public private(set) var written = 0

    public init(_ buffer: UnsafeMutableRawBufferPointer) {
        base = buffer.baseAddress
        capacity = buffer.count
    }

    /// The bytes written so far.
    public var bytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base, count: written)
    }

    public mutating func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= capacity - written else { return false }
        if bytes.count > 0, let base, let source = bytes.baseAddress {
            (base + written).copyMemory(from: source, byteCount: bytes.count)
        }
        written += bytes.count
        return true
    }

    public mutating func overwrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        guard offset >= 0, bytes.count <= written, offset <= written - bytes.count else { return false }
        if bytes.count > 0, let base, let source = bytes.baseAddress {
            (base + offset).copyMemory(from: source, byteCount: bytes.count)
        }
        return true
    }

    public mutating func withIOVecs<E: Error>(
        count n: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int
    ) throws(E) -> Int? {
        guard n >= 0, n <= capacity - written else { return nil }
        var vector = iovec(iov_base: base.map { $0 + written }, iov_len: n)
        let filled = try withUnsafePointer(to: &vector) { (p) throws(E) -> Int in
            try body(UnsafeBufferPointer(start: p, count: 1))
        }
        let advance = min(max(filled, 0), n)
        written += advance
        return advance
    }
}
