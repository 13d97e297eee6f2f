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
