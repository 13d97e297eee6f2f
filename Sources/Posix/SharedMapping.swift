#if canImport(Glibc)
import Glibc
#endif

/// Shared memory mappings (guest memory as a frontend sees it).
extension Sys {
    /// Maps `length` bytes of `fd` read-write and shared, from offset 0.
    /// The corresponding C function is `mmap`.
    public static func mapSharedReadWrite(_ fd: Int32, length: Int) throws(Errno) -> UnsafeMutableRawPointer {
        guard let pointer = Glibc.mmap(nil, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
              pointer != MAP_FAILED else { throw Errno.current }
        return pointer
    }

    /// Removes a mapping made by `mapSharedReadWrite`.
    /// The corresponding C function is `munmap`.
    public static func unmap(_ pointer: UnsafeMutableRawPointer, length: Int) {
        _ = Glibc.munmap(pointer, length)
    }
}
