#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import CVirtioFS
import Posix

/// The frontend's dirty-page log (SET_LOG_BASE with LOG_SHMFD): a bitmap with one
/// bit per 4 KiB page of guest-physical address, bit `page % 8` of byte `page / 8`.
/// While a migration copies guest memory, the frontend re-sends every page whose bit
/// we set, so each write the device makes into guest memory must be marked here.
///
/// Bits are set with an atomic fetch-or (the frontend clears them concurrently) and
/// release ordering, so a frontend that sees the bit also sees the data written before it.
/// Immutable after init; the mapping is unmapped when the last queue holding it stops.
public final class DirtyBitmap: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    /// Bytes of bitmap (the mapping may be larger when the offset was not page-aligned).
    public let byteCount: Int
    private let mapping: UnsafeMutableRawPointer
    private let mappingLength: Int
    /// Whether the SIGBUS guard covers the mapping (removed again in deinit).
    private let guarded: Bool

    public static var pageSize: UInt64 { UInt64(CVFS_VHOST_LOG_PAGE) }

    /// Maps `size` bytes of `fd` from `offset` (the caller keeps and closes `fd`). With a
    /// `faultNotifyFD` the mapping is guarded like guest memory: a frontend that shrinks
    /// the log's file afterwards gets zero pages and a closed connection, not a crash.
    public init(fd: Int32, size: UInt64, offset: UInt64, faultNotifyFD: Int32? = nil) throws(VhostUserError) {
        // A log is one bit per page: 1 GiB of bitmap covers 32 TiB of guest memory.
        guard size > 0, size <= 1 << 30 else { throw .badLog("size \(size) is not between 1 byte and 1 GiB") }
        let page = UInt64(Sys.pageSize)
        let alignedOffset = offset - offset % page
        let skip = offset - alignedOffset
        guard offset <= UInt64(Int64.max) - size else { throw .badLog("offset \(offset) overflows") }
        if let st = try? Sys.fstat(fd), st.st_mode & S_IFMT == S_IFREG, UInt64(max(0, st.st_size)) < offset + size {
            // Touching a page past the end of the file would be SIGBUS.
            throw .badLog("\(size) bytes at offset \(offset) reach past the end of its file (\(st.st_size) bytes)")
        }
        let length = Int(size + skip)
        let mapped: UnsafeMutableRawPointer
        do {
            mapped = try Sys.mmapShared(fd, length: length, offset: Int64(alignedOffset))
        } catch {
            throw .mapFailed(error)
        }
        mapping = mapped
        mappingLength = length
        if let faultNotifyFD {
            let pages = (UInt64(length) + page - 1) / page * page
            do {
                try Sys.guardMapping(mapped, length: Int(pages), notifyFD: faultNotifyFD)
            } catch {
                Sys.munmap(mapped, length: length)
                throw .guardFailed(error)
            }
            guarded = true
        } else {
            guarded = false
        }
        base = mapped + Int(skip)
        byteCount = Int(size)
    }

    /// A bitmap over memory the caller owns (tests).
    init(unownedBytes: UnsafeMutableRawBufferPointer) {
        base = unownedBytes.baseAddress ?? UnsafeMutableRawPointer(bitPattern: 8)!
        byteCount = unownedBytes.count
        mapping = base
        mappingLength = 0
        guarded = false
    }

    deinit {
        if guarded { Sys.unguardMapping(mapping) }
        if mappingLength > 0 { Sys.munmap(mapping, length: mappingLength) }
    }

    /// Marks every page that `[address, address + length)` touches. Pages beyond
    /// the bitmap are not marked (the frontend sized it to cover all of memory).
    @inline(__always)
    public func mark(guestAddress address: UInt64, length: UInt64) {
        guard length > 0 else { return }
        let first = address / Self.pageSize
        let (end, overflow) = address.addingReportingOverflow(length - 1)
        let last = overflow ? UInt64.max / Self.pageSize : end / Self.pageSize
        var page = first
        while page <= last {
            let byte = page / 8
            guard byte < UInt64(byteCount) else { return }
            let bit = UInt8(1) << UInt8(page % 8)
            (base + Int(byte)).assumingMemoryBound(to: Atomic<UInt8>.self).pointee
                .bitwiseOr(bit, ordering: .releasing)
            page += 1
        }
    }

    /// Whether the page holding `address` is marked (tests, diagnostics).
    public func isMarked(guestAddress address: UInt64) -> Bool {
        let page = address / Self.pageSize
        guard page / 8 < UInt64(byteCount) else { return false }
        let byte = (base + Int(page / 8)).assumingMemoryBound(to: Atomic<UInt8>.self).pointee.load(ordering: .acquiring)
        return byte & (UInt8(1) << UInt8(page % 8)) != 0
    }
}

/// What one running queue logs: the bitmap, the memory table its buffers were
/// translated with, and where its used ring is logged (VHOST_VRING_F_LOG).
final class QueueDirtyLog: @unchecked Sendable {
    // Immutable after init.
    let bitmap: DirtyBitmap
    let memory: GuestMemory
    /// log_guest_addr of SET_VRING_ADDR when the ring's log flag is set; nil: the used ring is not logged.
    let usedRingGuestAddress: UInt64?

    init(bitmap: DirtyBitmap, memory: GuestMemory, usedRingGuestAddress: UInt64?) {
        self.bitmap = bitmap
        self.memory = memory
        self.usedRingGuestAddress = usedRingGuestAddress
    }

    /// Marks `length` bytes written at `offset` into the used ring.
    @inline(__always)
    func markUsedRing(offset: Int, length: Int) {
        guard let start = usedRingGuestAddress else { return }
        bitmap.mark(guestAddress: start &+ UInt64(offset), length: UInt64(length))
    }

    /// Marks the first `bytes` bytes of the `count` writable segments at `segments`
    /// (host pointers into guest memory, as the chain writer wrote them).
    func markWritten(segments: UnsafeMutablePointer<iovec>, count: Int, bytes: Int) {
        var left = bytes
        var i = 0
        while left > 0 && i < count {
            let segment = segments[i]
            let n = min(left, segment.iov_len)
            if let p = segment.iov_base { markHost(UnsafeRawPointer(p), length: n) }
            left -= n
            i += 1
        }
    }

    /// Marks `length` bytes at host pointer `p`, which lies in one region of `memory`
    /// (every segment of a chain was translated inside one region).
    func markHost(_ p: UnsafeRawPointer, length: Int) {
        guard length > 0, let gpa = memory.guestAddress(of: p, length: length) else { return }
        bitmap.mark(guestAddress: gpa, length: UInt64(length))
    }
}
