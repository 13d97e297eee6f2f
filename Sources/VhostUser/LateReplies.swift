#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import CVirtioFS
import Posix

/// One writable buffer of a detached chain, kept as a guest-physical address:
/// the memory table may change before the reply is written, so no host
/// pointer is kept across it.
struct GuestBuffer: Equatable {
    var address: UInt64
    var length: UInt32
}

/// Replies to detached chains, finished on other threads, waiting for their
/// queue thread to write them into guest memory and push their used entries.
///
/// One per queue, kept by the backend across queue-thread restarts (a memory
/// table change restarts every queue thread), closed when the ring itself goes
/// away (GET_VRING_BASE, reset, disconnect): a reply finished after that is
/// refused, and its sender learns that nobody will read it.
///
/// Synchronisation: `state` is behind a mutex; `eventFD` is an eventfd the queue
/// thread polls beside its kick fd, written once per reply posted.
final class LateReplies: @unchecked Sendable {
    struct Ready {
        var head: UInt16
        var buffers: [GuestBuffer]
        var reply: [UInt8]
    }

    private struct State {
        var open = true
        var ready: [Ready] = []
    }

    /// The most reply bytes a detached chain keeps room for: a lock wait's answer
    /// is a bare 16-byte header, and the bound keeps each record small.
    static let maxReplyBytes = 4096

    private let state = Mutex(State())
    let eventFD: Int32

    init() throws(Errno) {
        eventFD = try Sys.eventfd(flags: CVFS_EFD_CLOEXEC | CVFS_EFD_NONBLOCK)
    }

    deinit { Sys.close(eventFD) }

    /// Refuses every later reply and forgets the ones not yet written.
    func close() {
        state.withLock { s in
            s.open = false
            s.ready = []
        }
    }

    /// Queues a finished reply; false when the queue is gone.
    func post(_ entry: Ready) -> Bool {
        let accepted = state.withLock { s -> Bool in
            guard s.open else { return false }
            // At most one entry per chain head, so at most a queue's worth.
            s.ready.append(entry)
            return true
        }
        if accepted { try? Sys.eventfdSignal(eventFD) }
        return accepted
    }

    /// Takes the replies posted so far (queue thread).
    func take() -> [Ready] {
        _ = try? Sys.eventfdDrain(eventFD)
        return state.withLock { s in
            let ready = s.ready
            s.ready = []
            return ready
        }
    }

    /// Writes each reply into its chain's buffers, translated through the memory
    /// table of now, and pushes the used entries (queue thread, which alone
    /// writes the used ring). A buffer no longer in guest memory gets the chain
    /// returned with length 0. Returns whether anything was pushed.
    static func complete(_ entries: [Ready], on queue: inout SplitQueue) -> Bool {
        for entry in entries {
            var written = 0
            var remaining = entry.reply[...]
            for buffer in entry.buffers where !remaining.isEmpty {
                let n = min(Int(buffer.length), remaining.count)
                guard let p = queue.memory.translate(guestAddress: buffer.address, length: UInt64(n)) else {
                    written = 0
                    break
                }
                remaining.withUnsafeBytes { p.copyMemory(from: $0.baseAddress.unsafelyUnwrapped, byteCount: n) }
                // A late reply is a guest-memory write like any other: logged while migrating.
                queue.dirtyLog?.bitmap.mark(guestAddress: buffer.address, length: UInt64(n))
                remaining = remaining.dropFirst(n)
                written += n
            }
            queue.push(head: entry.head, length: remaining.isEmpty ? UInt32(written) : 0)
        }
        return !entries.isEmpty
    }
}

/// The late reply of one detached chain.
final class ChainLateReply: LateReplyDestination {
    let replies: LateReplies
    let head: UInt16
    let buffers: [GuestBuffer]
    let capacity: Int
    private let sent = Atomic<Bool>(false)

    init(replies: LateReplies, head: UInt16, buffers: [GuestBuffer], capacity: Int) {
        self.replies = replies
        self.head = head
        self.buffers = buffers
        self.capacity = capacity
    }

    func send(_ reply: UnsafeRawBufferPointer) -> Bool {
        guard reply.count <= capacity, !sent.exchange(true, ordering: .acquiringAndReleasing) else { return false }
        return replies.post(LateReplies.Ready(head: head, buffers: buffers, reply: Array(reply)))
    }
}

/// What a detached chain's reply destination offers; the FUSE layer's late
/// reply protocol is satisfied by it without this module knowing FUSE.
public protocol LateReplyDestination: AnyObject, Sendable {
    /// Queues `reply` for the chain; false, nothing queued, when the queue is gone
    /// or the reply does not fit the chain's buffers.
    func send(_ reply: UnsafeRawBufferPointer) -> Bool
}

extension GuestMemory {
    /// The guest-physical address of host pointer `p`, when `length` bytes at it
    /// lie in one region.
    func guestAddress(of p: UnsafeRawPointer, length: Int) -> UInt64? {
        for r in regions {
            let base = UnsafeRawPointer(r.host)
            guard p >= base else { continue }
            let offset = UInt64(p - base)
            guard offset < r.size, UInt64(length) <= r.size - offset else { continue }
            return r.guestPhysicalAddress &+ offset
        }
        return nil
    }
}
