#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

extension Sys {
    /// Attaches `fd`, a fresh open of /dev/fuse, to the connection behind
    /// `sessionFD`, so requests can be read from either.
    /// The corresponding C function is `ioctl` (FUSE_DEV_IOC_CLONE).
    public static func fuseDeviceClone(_ fd: Int32, sessionFD: Int32) throws(Errno) {
        var session = UInt32(bitPattern: sessionFD)
        _ = try retryingEINTR { cvfs_ioctl_ptr(fd, CVFS_FUSE_DEV_IOC_CLONE, &session) }
    }

}
