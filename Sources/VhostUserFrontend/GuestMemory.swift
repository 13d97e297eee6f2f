#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// A piece of guest memory: where the device sees it (`guestAddress`) and where we do (`pointer`).
public struct GuestBuffer: @unchecked Sendable {
    public let guestAddress: UInt64
    public let pointer: UnsafeMutableRawPointer
    public let count: Int

    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: pointer, count: count) }

    /// The first `length` bytes (clamped to the buffer).
    public func prefix(_ length: Int) -> GuestBuffer {
        GuestBuffer(guestAddress: guestAddress, pointer: pointer, count: min(max(length, 0), count))
    }

    /// The bytes from `offset` on (clamped to the buffer).
    public func dropFirst(_ offset: Int) -> GuestBuffer {
        let start = min(max(offset, 0), count)
        return GuestBuffer(guestAddress: guestAddress + UInt64(start), pointer: pointer + start, count: count - start)
    }
}

/// The simulated guest's RAM: one memfd region mapped into this process, guest
/// physical base 0, handed to the backend with SET_MEM_TABLE. Sealed against
/// growing and shrinking by default, as QEMU's memory-backend-memfd does. A bump allocator
/// hands out pieces; nothing is ever freed (a frontend lives for one test or run).
///
/// Not thread-safe: one thread drives a frontend.
public final class GuestMemory {
    public let fd: Int32
    public let size: Int
    public let base: UnsafeMutableRawPointer
    /// The guest physical address of byte 0.
    public let guestBase: UInt64 = 0
    private var next = 0

    /// Whether the memfd carries F_SEAL_SHRINK (and F_SEAL_GROW, F_SEAL_SEAL).
    public let sealed: Bool

    /// `sealed: false` leaves the memfd resizable, like `memory-backend-memfd,seal=off`
    /// (tests use it to shrink memory under the backend).
    public init(size: Int, sealed: Bool = true) throws(FrontendError) {
        guard size > 0, size % 4096 == 0 else { throw .noRoom("guest memory size \(size) is not a positive multiple of 4096") }
        fd = try attempt("memfd_create") { () throws(Errno) in
            try Sys.memfdCreate("guest-ram", flags: CVFS_MFD_CLOEXEC | (sealed ? CVFS_MFD_ALLOW_SEALING : 0))
        }
        self.sealed = sealed
        do {
            try Sys.ftruncate(fd, Int64(size))
            if sealed { try Sys.addFileSeals(fd, CVFS_F_SEAL_SHRINK | CVFS_F_SEAL_GROW | CVFS_F_SEAL_SEAL) }
            base = try Sys.mmapShared(fd, length: size, offset: 0)
        } catch {
            Sys.close(fd)
            throw .system(step: "map guest memory", error)
        }
        self.size = size
    }

    deinit {
        Sys.munmap(base, length: size)
        Sys.close(fd)
    }

    /// This process's address of the region (the `userspace_addr` QEMU reports).
    public var userspaceAddress: UInt64 { UInt64(UInt(bitPattern: base)) }

    /// Resizes the memfd behind the backend's back (a hostile or broken frontend).
    /// Pages past the new end fault with SIGBUS for every process that maps them,
    /// this one included: touch no guest memory afterwards.
    public func resizeFile(to length: Int) throws(FrontendError) {
        try attempt("ftruncate guest memory") { () throws(Errno) in try Sys.ftruncate(fd, Int64(length)) }
    }

    /// Bytes not yet handed out.
    public var available: Int { size - next }

    /// Hands out `count` zeroed bytes aligned to `alignment` (a power of two).
    public func allocate(_ count: Int, alignment: Int = 16) throws(FrontendError) -> GuestBuffer {
        let start = (next + alignment - 1) & ~(alignment - 1)
        guard count >= 0, start <= size, count <= size - start else {
            throw .noRoom("guest memory: \(count) bytes asked, \(size - next) left")
        }
        next = start + count
        return GuestBuffer(guestAddress: guestBase + UInt64(start), pointer: base + start, count: count)
    }

    /// Translates a guest physical address to our pointer; nil outside the region.
    public func pointer(guestAddress: UInt64, count: Int) -> UnsafeMutableRawPointer? {
        guard guestAddress >= guestBase, count >= 0 else { return nil }
        let offset = guestAddress - guestBase
        guard offset <= UInt64(size), UInt64(count) <= UInt64(size) - offset else { return nil }
        return base + Int(offset)
    }
}
