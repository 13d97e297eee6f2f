#if canImport(Glibc)
import Glibc
#endif

/// Moves `count` bytes across a run of iovec segments, in place.
/// The cursor is (segment index, offset in it); it never rests at the end of a
/// non-final segment, so `segments[index]` always has bytes left while any remain.
struct SegmentCursor {
    let segments: UnsafeMutablePointer<iovec>
    let count: Int
    var index = 0
    var offset = 0

    init(segments: UnsafeMutablePointer<iovec>, count: Int) {
        self.segments = segments
        self.count = count
    }

    /// Advances by `n` bytes, calling `body(segmentPointer, length)` for each piece.
    /// The caller has checked that `n` bytes remain.
    @inline(__always)
    mutating func advance(by n: Int, _ body: (UnsafeMutableRawPointer, Int) -> Void) {
        var left = n
        while left > 0 && index < count {
            let seg = segments[index]
            let available = seg.iov_len - offset
            let take = min(available, left)
            if let base = seg.iov_base {
                body(base + offset, take)
            }
            left -= take
            offset += take
            if offset == seg.iov_len {
                index += 1
                offset = 0
            }
        }
    }

    /// Calls `body` with iovecs covering exactly the next `n` bytes (which the
    /// caller has checked remain), patching the first and last entries in place
    /// and restoring them afterwards.
    @inline(__always)
    func withIOVecs<E: Error>(_ n: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int) throws(E) -> Int {
        if n == 0 {
            return try body(UnsafeBufferPointer(start: segments + index, count: 0))
        }
        // Find the last segment the n bytes reach into, and how much of it.
        var last = index
        var need = n
        var firstAvailable = segments[index].iov_len - offset
        var lastLength = min(firstAvailable, need)
        need -= lastLength
        while need > 0 && last + 1 < count {
            last += 1
            lastLength = min(segments[last].iov_len, need)
            need -= lastLength
        }
        let savedFirst = segments[index]
        let savedLast = segments[last]
        defer {
            segments[index] = savedFirst
            segments[last] = savedLast
        }
        if last == index {
            firstAvailable = lastLength
        }
        segments[index].iov_base = savedFirst.iov_base.map { $0 + offset }
        segments[index].iov_len = firstAvailable
        if last != index {
            segments[last].iov_len = lastLength
        }
        return try body(UnsafeBufferPointer(start: segments + index, count: last - index + 1))
    }

    /// `withIOVecs`, then advances past the bytes `body` says it used, clamped to
    /// 0...n so a short or bogus answer cannot move the cursor outside the range.
    @inline(__always)
    mutating func consumeIOVecs<E: Error>(_ n: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int) throws(E) -> Int {
        let used = min(max(try withIOVecs(n, body), 0), n)
        advance(by: used) { _, _ in }
        return used
    }
}

/// The device-readable buffers of one descriptor chain, read in place in guest
/// memory. Valid only while its chain is being handled.
public struct ChainReader {
    var cursor: SegmentCursor
    public private(set) var remaining: Int

    init(segments: UnsafeMutablePointer<iovec>, count: Int, total: Int) {
        cursor = SegmentCursor(segments: segments, count: count)
        remaining = total
    }

    /// Copies exactly `buffer.count` bytes and advances; false (nothing consumed) if fewer remain.
    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard buffer.count <= remaining else { return false }
        guard let destination = buffer.baseAddress else { return true }
        var done = 0
        cursor.advance(by: buffer.count) { source, n in
            (destination + done).copyMemory(from: source, byteCount: n)
            done += n
        }
        remaining -= buffer.count
        return true
    }

    /// Advances past `count` bytes; false (nothing consumed) if fewer remain.
    public mutating func skip(_ count: Int) -> Bool {
        guard count >= 0, count <= remaining else { return false }
        cursor.advance(by: count) { _, _ in }
        remaining -= count
        return true
    }

    /// Calls `body` with iovecs over the next `count` bytes in place; advances by
    /// what it returns (clamped to 0...count). nil, without calling it, if fewer remain.
    public mutating func withIOVecs<E: Error>(
        count: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int
    ) throws(E) -> Int? {
        guard count >= 0, count <= remaining else { return nil }
        let used = try cursor.consumeIOVecs(count, body)
        remaining -= used
        return used
    }
}

/// The device-writable buffers of one descriptor chain, written in place in
/// guest memory. Valid only while its chain is being handled.
public struct ChainWriter {
    var cursor: SegmentCursor
    public let capacity: Int
    public private(set) var written: Int = 0
    /// Where a late reply would go; nil where the chain cannot be detached.
    let detachTarget: DetachTarget?
    /// True once `detachReply` handed the chain's reply to a late sender: the
    /// queue must not push it when the handler returns.
    public private(set) var isDetached = false

    init(segments: UnsafeMutablePointer<iovec>, count: Int, total: Int, detachTarget: DetachTarget? = nil) {
        cursor = SegmentCursor(segments: segments, count: count)
        capacity = total
        self.detachTarget = detachTarget
    }

    /// Detaches the chain before anything is written: its writable buffers are
    /// recorded as guest addresses (at most `LateReplies.maxReplyBytes` of
    /// them) and the returned destination sends the reply later, from any
    /// thread, through the queue thread. nil when the chain cannot be detached.
    public mutating func detachReply() -> (any LateReplyDestination)? {
        guard !isDetached, written == 0, let target = detachTarget else { return nil }
        var buffers: [GuestBuffer] = []
        var covered = 0
        var i = 0
        while i < cursor.count && covered < LateReplies.maxReplyBytes {
            let segment = cursor.segments[i]
            let length = min(segment.iov_len, LateReplies.maxReplyBytes - covered)
            guard let base = segment.iov_base,
                  let address = target.memory.guestAddress(of: base, length: length) else { return nil }
            buffers.append(GuestBuffer(address: address, length: UInt32(length)))
            covered += length
            i += 1
        }
        isDetached = true
        return ChainLateReply(replies: target.replies, head: target.head, buffers: buffers, capacity: covered)
    }

    /// Copies `bytes` at the cursor and advances; false (nothing written) if they do not fit.
    public mutating func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= capacity - written else { return false }
        guard let source = bytes.baseAddress else { return true }
        var done = 0
        cursor.advance(by: bytes.count) { destination, n in
            destination.copyMemory(from: source + done, byteCount: n)
            done += n
        }
        written += bytes.count
        return true
    }

    /// Copies `bytes` at `offset` without moving the cursor; the range must lie
    /// below the cursor (already written). False, nothing written, otherwise.
    public mutating func overwrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        guard offset >= 0, offset <= written, bytes.count <= written - offset else { return false }
        guard let source = bytes.baseAddress else { return true }
        var seek = SegmentCursor(segments: cursor.segments, count: cursor.count)
        seek.advance(by: offset) { _, _ in }
        var done = 0
        seek.advance(by: bytes.count) { destination, n in
            destination.copyMemory(from: source + done, byteCount: n)
            done += n
        }
        return true
    }

    /// Calls `body` with iovecs over the next `count` writable bytes in place;
    /// the cursor advances by what it returns (clamped to 0...count). nil,
    /// without calling it, if `count` bytes do not fit.
    public mutating func withIOVecs<E: Error>(
        count: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int
    ) throws(E) -> Int? {
        guard count >= 0, count <= capacity - written else { return nil }
        let used = try cursor.consumeIOVecs(count, body)
        written += used
        return used
    }
}

/// What a chain needs to be detached: its head and its queue's late replies.
/// Unowned: the queue thread (or a pool batch it waits for) holds both for
/// the whole time a handler runs, and a writer lives no longer than that.
struct DetachTarget {
    let head: UInt16
    unowned(unsafe) let replies: LateReplies
    unowned(unsafe) let memory: GuestMemory
}
