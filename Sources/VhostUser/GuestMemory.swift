#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// One region as the frontend describes it (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG).
public struct MemoryRegionDescription: Equatable, Sendable {
    public var guestPhysicalAddress: UInt64
    public var size: UInt64
    /// The region's address in the frontend's (QEMU's) own address space.
    public var userspaceAddress: UInt64
    /// Where the region starts inside the fd it arrives with.
    public var mmapOffset: UInt64

    public init(guestPhysicalAddress: UInt64, size: UInt64, userspaceAddress: UInt64, mmapOffset: UInt64) {
        self.guestPhysicalAddress = guestPhysicalAddress
        self.size = size
        self.userspaceAddress = userspaceAddress
        self.mmapOffset = mmapOffset
    }
}

/// An mmap of one region's fd; unmapped when the last table holding it goes away.
final class MemoryMapping: @unchecked Sendable {
    // Immutable after init; the mapping itself is shared memory the guest also writes.
    let base: UnsafeMutableRawPointer
    let length: Int
    /// Where the region's first byte sits inside the mapping.
    let start: UnsafeMutableRawPointer
    /// The fd carries F_SEAL_SHRINK: its file cannot shrink under the mapping.
    let sealedAgainstShrinking: Bool
    /// Whether the SIGBUS guard covers the mapping (removed again in deinit).
    private let guarded: Bool

    /// Maps `region` from `fd` (which the caller still owns and closes). With a
    /// `faultNotifyFD` (an eventfd) the mapping is guarded: a SIGBUS inside it (the
    /// frontend shrank the file after sharing it) is repaired with zero pages and
    /// counted on that eventfd instead of killing the process.
    init(region: MemoryRegionDescription, fd: Int32, faultNotifyFD: Int32? = nil) throws(VhostUserError) {
        guard region.size > 0 else { throw .badRegion("size 0") }
        let page = UInt64(Sys.pageSize)
        // mmap wants a page-aligned offset: map from 0 and slice when it is not.
        let offset = region.mmapOffset % page == 0 ? region.mmapOffset : 0
        let skip = region.mmapOffset - offset
        let (total, overflow) = region.size.addingReportingOverflow(skip)
        guard !overflow, total <= UInt64(Int.max) - page,
              region.mmapOffset <= UInt64(Int64.max) else {
            throw .badRegion("size 0x\(String(region.size, radix: 16)) at offset 0x\(String(region.mmapOffset, radix: 16)) overflows")
        }
        let (_, gpaOverflow) = region.guestPhysicalAddress.addingReportingOverflow(region.size)
        let (_, uvaOverflow) = region.userspaceAddress.addingReportingOverflow(region.size)
        guard !gpaOverflow, !uvaOverflow else { throw .badRegion("address range wraps around") }
        let st: stat
        do { st = try Sys.fstat(fd) } catch { throw .badRegion("cannot inspect its file descriptor: \(error)") }
        switch st.st_mode & S_IFMT {
        case S_IFREG:
            // memfds, hugetlbfs and tmpfs files. A page mapped past the end of its
            // file faults with SIGBUS when touched.
            let (end, endOverflow) = region.mmapOffset.addingReportingOverflow(region.size)
            guard !endOverflow, end <= UInt64(max(0, st.st_size)) else {
                throw .badRegion("size 0x\(String(region.size, radix: 16)) at offset 0x\(String(region.mmapOffset, radix: 16)) reaches past the end of its file (0x\(String(st.st_size, radix: 16)) bytes)")
            }
        case S_IFCHR:
            // Device memory (a DAX device as memory-backend-file): mmap decides.
            break
        default:
            throw .badRegion("its file descriptor is \(fileKind(st.st_mode)), not a file or device that can back guest memory")
        }
        // Files that cannot be sealed (hugetlbfs, disk files) answer EINVAL: unsealed.
        let seals = (try? Sys.fileSeals(fd)) ?? 0
        sealedAgainstShrinking = seals & CVFS_F_SEAL_SHRINK != 0
        do {
            base = try Sys.mmapShared(fd, length: Int(total), offset: Int64(offset))
        } catch {
            throw .mapFailed(error)
        }
        length = Int(total)
        start = base + Int(skip)
        if let faultNotifyFD {
            // The kernel maps whole pages: guard every page of the mapping.
            let pages = (UInt64(length) + page - 1) / page * page
            do {
                try Sys.guardMapping(base, length: Int(pages), notifyFD: faultNotifyFD)
            } catch {
                Sys.munmap(base, length: length)
                throw .guardFailed(error)
            }
            guarded = true
        } else {
            guarded = false
        }
    }

    deinit {
        if guarded { Sys.unguardMapping(base) }
        Sys.munmap(base, length: length)
    }
}

/// What kind of file `mode` describes, for error messages.
func fileKind(_ mode: mode_t) -> String {
    switch mode & S_IFMT {
    case S_IFREG: return "a regular file"
    case S_IFDIR: return "a directory"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFIFO: return "a pipe"
    case S_IFSOCK: return "a socket"
    case S_IFLNK: return "a symbolic link"
    default: return "an anonymous inode (not a file)"
    }
}

/// The guest's memory as the frontend shared it: an immutable snapshot of the
/// memory table. A new table is a new `GuestMemory`; the old one (and its
/// mappings) lives on until no queue thread holds it.
///
/// Every translation checks `(address, length)` with overflow-checked
/// arithmetic and requires the whole range to lie inside one region.
public final class GuestMemory: @unchecked Sendable {
    // Immutable after init, so any thread may read it.
    struct Region {
        var guestPhysicalAddress: UInt64
        var userspaceAddress: UInt64
        var size: UInt64
        var host: UnsafeMutableRawPointer
    }

    let regions: [Region]
    let descriptions: [MemoryRegionDescription]
    private let mappings: [MemoryMapping]

    init(descriptions: [MemoryRegionDescription], mappings: [MemoryMapping]) {
        self.descriptions = descriptions
        self.mappings = mappings
        var regions: [Region] = []
        regions.reserveCapacity(descriptions.count)
        for (d, m) in zip(descriptions, mappings) {
            regions.append(Region(guestPhysicalAddress: d.guestPhysicalAddress,
                                  userspaceAddress: d.userspaceAddress, size: d.size, host: m.start))
        }
        self.regions = regions
    }

    /// An empty table (no translation succeeds).
    public convenience init() { self.init(descriptions: [], mappings: []) }

    /// Maps each region from its fd (fds stay owned by the caller); with a
    /// `faultNotifyFD` every mapping is guarded against SIGBUS (see `MemoryMapping`).
    public convenience init(regions: [MemoryRegionDescription], fds: [Int32], faultNotifyFD: Int32? = nil) throws(VhostUserError) {
        guard regions.count == fds.count else {
            throw .fdCount(request: "memory table", expected: "\(regions.count)", actual: fds.count)
        }
        var mappings: [MemoryMapping] = []
        for (region, fd) in zip(regions, fds) {
            mappings.append(try MemoryMapping(region: region, fd: fd, faultNotifyFD: faultNotifyFD))
        }
        try GuestMemory.checkNoOverlap(regions)
        self.init(descriptions: regions, mappings: mappings)
    }

    public var regionCount: Int { regions.count }

    /// Regions whose file is not sealed against shrinking (F_SEAL_SHRINK): the
    /// frontend could still shrink it under us (guarded mappings survive that).
    public var unsealedRegionCount: Int { mappings.filter { !$0.sealedAgainstShrinking }.count }

    /// A copy of this table with one more region mapped from `fd`.
    func adding(_ region: MemoryRegionDescription, fd: Int32, faultNotifyFD: Int32? = nil) throws(VhostUserError) -> GuestMemory {
        let mapping = try MemoryMapping(region: region, fd: fd, faultNotifyFD: faultNotifyFD)
        try GuestMemory.checkNoOverlap(descriptions + [region])
        return GuestMemory(descriptions: descriptions + [region], mappings: mappings + [mapping])
    }

    /// A copy of this table without the region at `region`'s guest address and size.
    func removing(_ region: MemoryRegionDescription) throws(VhostUserError) -> GuestMemory {
        guard let i = descriptions.firstIndex(where: {
            $0.guestPhysicalAddress == region.guestPhysicalAddress && $0.size == region.size
        }) else {
            throw .regionNotFound(guestAddress: region.guestPhysicalAddress, size: region.size)
        }
        var d = descriptions, m = mappings
        d.remove(at: i)
        m.remove(at: i)
        return GuestMemory(descriptions: d, mappings: m)
    }

    private static func checkNoOverlap(_ regions: [MemoryRegionDescription]) throws(VhostUserError) {
        // Sizes were checked not to wrap when each region was mapped.
        for i in regions.indices {
            for j in regions.indices where j > i {
                let a = regions[i], b = regions[j]
                if a.guestPhysicalAddress < b.guestPhysicalAddress &+ b.size
                    && b.guestPhysicalAddress < a.guestPhysicalAddress &+ a.size {
                    throw .badRegion("guest address ranges of two regions overlap")
                }
            }
        }
    }

    /// Host pointer for `length` bytes at guest-physical `address` (descriptor
    /// addresses), or nil unless the whole range lies in one region.
    @inline(__always)
    public func translate(guestAddress address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        translate(address, length, regionStart: { $0.guestPhysicalAddress })
    }

    /// Host pointer for `length` bytes at a frontend virtual address (vring
    /// addresses arrive in QEMU's address space), or nil.
    public func translate(frontendAddress address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        translate(address, length, regionStart: { $0.userspaceAddress })
    }

    /// The one bounds check behind both address spaces: `regionStart` says where
    /// each region begins in the space `address` belongs to.
    @inline(__always)
    private func translate(_ address: UInt64, _ length: UInt64,
                           regionStart: (Region) -> UInt64) -> UnsafeMutableRawPointer? {
        for r in regions {
            let start = regionStart(r)
            guard address >= start else { continue }
            let offset = address - start
            guard offset < r.size, length <= r.size - offset else { continue }
            return r.host + Int(offset)
        }
        return nil
    }
}
