#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

/// Thin wrappers over the process, namespace and mount system calls the sandbox uses.
/// Each retries EINTR where the call can be interrupted and throws `Errno`.
extension Sys {
    /// The corresponding C function is `unshare`.
    public static func unshare(_ flags: Int32) throws(Errno) {
        _ = try retryingEINTR { cvfs_unshare(flags) }
    }

    /// The corresponding C function is `mount`.
    public static func mount(source: String?, target: String, type: String?,
                             flags: UInt, data: String? = nil) throws(Errno) {
        let result: Int32 = withOptionalCString(source) { src in
            withOptionalCString(type) { fstype in
                withOptionalCString(data) { dat in
                    cvfs_mount(src, target, fstype, flags, dat)
                }
            }
        }
        _ = try checked(result)
    }

    /// The corresponding C function is `umount2`.
    public static func umount2(_ target: String, flags: Int32) throws(Errno) {
        _ = try retryingEINTR { cvfs_umount2(target, flags) }
    }

    /// The corresponding C function is `pivot_root`.
    public static func pivotRoot(newRoot: String, putOld: String) throws(Errno) {
        _ = try checked(cvfs_pivot_root(newRoot, putOld))
    }

    /// The corresponding C function is `chroot`.
    public static func chroot(_ path: String) throws(Errno) {
        _ = try checked(cvfs_chroot(path))
    }

    /// The corresponding C function is `chdir`.
    public static func chdir(_ path: String) throws(Errno) {
        _ = try retryingEINTR { Glibc.chdir(path) }
    }

    /// The corresponding C function is `fork`.
    public static func fork() throws(Errno) -> pid_t {
        try checked(cvfs_fork())
    }

    /// The corresponding C function is `pipe`. Returns (read end, write end).
    public static func pipe() throws(Errno) -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        _ = try checked(Glibc.pipe(&fds))
        return (fds[0], fds[1])
    }

    /// The corresponding C function is `waitpid`. Returns the raw wait status.
    public static func waitpid(_ pid: pid_t, options: Int32 = 0) throws(Errno) -> (pid: pid_t, status: Int32) {
        var status: Int32 = 0
        let got = try retryingEINTR { Glibc.waitpid(pid, &status, options) }
        return (got, status)
    }

    /// The corresponding C function is `kill`.
    public static func kill(_ pid: pid_t, _ signal: Int32) throws(Errno) {
        _ = try checked(Glibc.kill(pid, signal))
    }

    /// The corresponding C function is `prctl`.
    @discardableResult
    public static func prctl(_ option: Int32, _ arg2: UInt = 0, _ arg3: UInt = 0,
                             _ arg4: UInt = 0, _ arg5: UInt = 0) throws(Errno) -> Int32 {
        try checked(cvfs_prctl(option, arg2, arg3, arg4, arg5))
    }

    /// The corresponding C function is `getrlimit`.
    public static func getrlimit(_ resource: Int32) throws(Errno) -> rlimit {
        var limit = rlimit()
        _ = try checked(Glibc.getrlimit(__rlimit_resource_t(resource), &limit))
        return limit
    }

    /// The corresponding C function is `setrlimit`.
    public static func setrlimit(_ resource: Int32, _ limit: rlimit) throws(Errno) {
        var copy = limit
        _ = try checked(Glibc.setrlimit(__rlimit_resource_t(resource), &copy))
    }
}

@inline(__always)
private func withOptionalCString<R>(_ s: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let s else { return body(nil) }
    return s.withCString { body($0) }
}
