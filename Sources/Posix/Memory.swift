#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

extension Sys {
    /// Maps `length` bytes of `fd` at `offset` shared and read-write.
    /// The corresponding C function is `mmap`.
    public static func mmapShared(_ fd: Int32, length: Int, offset: Int64) throws(Errno) -> UnsafeMutableRawPointer {
        let p = Glibc.mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED | CVFS_MAP_NORESERVE, fd, off_t(offset))
        guard let p, p != MAP_FAILED else { throw Errno.current }
        return p
    }

    /// The corresponding C function is `munmap`.
    public static func munmap(_ address: UnsafeMutableRawPointer, length: Int) {
        _ = Glibc.munmap(address, length)
    }

    /// Drops the pages of `length` bytes at `address` from this process (they come
    /// back from the file or as zeros on the next touch).
    /// The corresponding C function is `madvise(MADV_DONTNEED)`.
    public static func dropPages(_ address: UnsafeMutableRawPointer, length: Int) throws(Errno) {
        if Glibc.madvise(address, length, MADV_DONTNEED) != 0 { throw Errno.current }
    }

    /// The corresponding C function is `sysconf(_SC_PAGESIZE)`.
    public static var pageSize: Int { Int(sysconf(Int32(_SC_PAGESIZE))) }
}

/// File seals and the guard over shared mappings (guest memory).
extension Sys {
    /// The seals on `fd` (`CVFS_F_SEAL_*` bits); EINVAL for a file that cannot be sealed.
    /// The corresponding C function is `fcntl(F_GET_SEALS)`.
    public static func fileSeals(_ fd: Int32) throws(Errno) -> Int32 {
        try retryingEINTR { cvfs_fcntl_int(fd, CVFS_F_GET_SEALS, 0) }
    }

    /// The corresponding C function is `fcntl(F_ADD_SEALS)`.
    public static func addFileSeals(_ fd: Int32, _ seals: Int32) throws(Errno) {
        _ = try retryingEINTR { cvfs_fcntl_int(fd, CVFS_F_ADD_SEALS, seals) }
    }

    /// Guards the shared mapping `[base, base + length)` against SIGBUS (see
    /// `cvfs_memguard.h`): a fault in it is repaired with zero pages and counted
    /// on the eventfd `notifyFD`. The SIGBUS handler is installed on first use.
    public static func guardMapping(_ base: UnsafeMutableRawPointer, length: Int, notifyFD: Int32) throws(Errno) {
        _ = try checked(cvfs_memguard_install())
        _ = try checked(cvfs_memguard_add(base, length, notifyFD))
    }

    /// Stops guarding the mapping at `base`; call before unmapping it.
    public static func unguardMapping(_ base: UnsafeMutableRawPointer) {
        cvfs_memguard_remove(base)
    }

    /// Faults in guarded mappings repaired since the process started.
    public static var guardedFaultsRepaired: UInt64 { cvfs_memguard_repaired() }
}
