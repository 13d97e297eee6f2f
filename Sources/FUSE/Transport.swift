#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

/// The device-readable bytes of one request: the FUSE header, the op struct,
/// names and WRITE payload. A transport (a virtqueue chain, a /dev/fuse buffer)
/// implements it over its own memory; the dispatcher never learns which.
///
/// Every method is bounds-checked: asking for more than `remaining` fails and
/// consumes nothing.
public protocol FuseReader {
    /// Bytes not yet consumed.
    var remaining: Int { get }

    /// Copies exactly `buffer.count` bytes and advances; false (nothing consumed) if fewer remain.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Bool

    /// Advances past `count` bytes; false (nothing consumed) if fewer remain.
    mutating func skip(_ count: Int) -> Bool

    /// Zero copy: calls `body` with iovecs that cover the next `count` bytes in
    /// place (for `pwritev`). `body` returns how many bytes it consumed (or
    /// throws); the reader advances by that. Fails with EINVAL-like `false` result
    /// through the thrown error if fewer than `count` bytes remain.
    mutating func withIOVecs<E: Error>(
        count: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int
    ) throws(E) -> Int?
}

/// The device-writable bytes of one request: where the reply goes.
public protocol FuseWriter {
    /// Total bytes the reply may occupy.
    var capacity: Int { get }
    /// Bytes written so far (the cursor).
    var written: Int { get }

    /// Copies `bytes` at the cursor and advances; false (nothing written) if they do not fit.
    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Bool

    /// Copies `bytes` at an absolute offset below the cursor without moving it
    /// (used to fill in the reply header once the payload length is known).
    mutating func overwrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool

    /// Zero copy: calls `body` with iovecs covering the next `count` writable
    /// bytes in place (for `preadv`); `body` returns how many it filled, and the
    /// cursor advances by that. Returns nil without calling `body` if `count`
    /// bytes do not fit.
    mutating func withIOVecs<E: Error>(
        count: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int
    ) throws(E) -> Int?

    /// Detaches the reply destination before anything is written: the transport
    /// then does not complete the request when the handler returns, and the
    /// reply goes through the returned `LateReply` instead, later, from any
    /// thread. nil when this transport cannot answer late (answer now instead).
    mutating func detach() -> (any LateReply)?
}

extension FuseWriter {
    /// Bytes still free after the cursor.
    @inlinable public var available: Int { capacity - written }
}

/// Where a detached request's reply goes: the transport keeps the request open
/// and sends the reply whenever `send` is called, from any thread.
public protocol LateReply: AnyObject, Sendable {
    /// Sends `reply` (a whole reply: `fuse_out_header` first) as the answer to
    /// the detached request. Returns false, having sent nothing, when the
    /// transport can no longer answer it (its queue was reset or stopped for
    /// good, or the device closed). Call it at most once.
    func send(_ reply: UnsafeRawBufferPointer) -> Bool
}

extension FuseWriter {
    /// Transports that cannot answer late keep this default.
    public mutating func detach() -> (any LateReply)? { nil }
}
