#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS

/// Thin wrappers over the file system calls of the passthrough backend.
/// Each retries EINTR (where the call is restartable) and throws `Errno`.
extension Sys {
    /// The corresponding C function is `openat2` (falls back to nothing: callers decide).
    public static func openat2(_ dirfd: Int32, _ path: UnsafePointer<CChar>, flags: Int32, mode: mode_t = 0, resolve: UInt64) throws(Errno) -> Int32 {
        try retryingEINTR { cvfs_openat2(dirfd, path, UInt64(UInt32(bitPattern: flags | O_CLOEXEC)), UInt64(mode), resolve) }
    }

    /// The corresponding C function is `fstatat`.
    public static func fstatat(_ dirfd: Int32, _ path: UnsafePointer<CChar>, flags: Int32) throws(Errno) -> stat {
        var st = stat()
        _ = try retryingEINTR { Glibc.fstatat(dirfd, path, &st, flags) }
        return st
    }

    /// Attributes plus the mount id. The corresponding C function is `statx`.
    public static func statxIdentity(_ dirfd: Int32, _ path: UnsafePointer<CChar>, flags: Int32) throws(Errno) -> (stat, UInt64) {
        var st = stat()
        var mountID: UInt64 = 0
        _ = try retryingEINTR { cvfs_statx_identity(dirfd, path, flags, &st, &mountID) }
        return (st, mountID)
    }

    /// The corresponding C function is `mkdirat`.
    public static func mkdirat(_ dirfd: Int32, _ path: UnsafePointer<CChar>, _ mode: mode_t) throws(Errno) {
        _ = try retryingEINTR { Glibc.mkdirat(dirfd, path, mode) }
    }

    /// The corresponding C function is `mknodat`.
    public static func mknodat(_ dirfd: Int32, _ path: UnsafePointer<CChar>, _ mode: mode_t, _ dev: dev_t) throws(Errno) {
        _ = try retryingEINTR { cvfs_mknodat(dirfd, path, mode, dev) }
    }

    /// The corresponding C function is `symlinkat`.
    public static func symlinkat(_ target: UnsafePointer<CChar>, _ dirfd: Int32, _ path: UnsafePointer<CChar>) throws(Errno) {
        _ = try retryingEINTR { Glibc.symlinkat(target, dirfd, path) }
    }

    /// The corresponding C function is `linkat`.
    public static func linkat(_ olddirfd: Int32, _ oldpath: UnsafePointer<CChar>, _ newdirfd: Int32, _ newpath: UnsafePointer<CChar>, flags: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.linkat(olddirfd, oldpath, newdirfd, newpath, flags) }
    }

    /// The corresponding C function is `unlinkat`.
    public static func unlinkat(_ dirfd: Int32, _ path: UnsafePointer<CChar>, flags: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.unlinkat(dirfd, path, flags) }
    }

    /// The corresponding C function is `renameat2`.
    public static func renameat2(_ olddirfd: Int32, _ oldpath: UnsafePointer<CChar>, _ newdirfd: Int32, _ newpath: UnsafePointer<CChar>, flags: UInt32) throws(Errno) {
        _ = try retryingEINTR { cvfs_renameat2(olddirfd, oldpath, newdirfd, newpath, flags) }
    }

    /// The corresponding C function is `readlinkat`.
    public static func readlinkat(_ dirfd: Int32, _ path: UnsafePointer<CChar>, _ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        guard let base = buffer.baseAddress else { return 0 }
        return try retryingEINTR { Glibc.readlinkat(dirfd, path, base.assumingMemoryBound(to: CChar.self), buffer.count) }
    }

    /// The corresponding C function is `faccessat` (faccessat2 when flags are given).
    public static func faccessat(_ dirfd: Int32, _ path: UnsafePointer<CChar>, _ mode: Int32, flags: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.faccessat(dirfd, path, mode, flags) }
    }

    /// The corresponding C function is `fchmodat`.
    public static func fchmodat(_ dirfd: Int32, _ path: UnsafePointer<CChar>, _ mode: mode_t, flags: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.fchmodat(dirfd, path, mode, flags) }
    }

    /// The corresponding C function is `fchmod`.
    public static func fchmod(_ fd: Int32, _ mode: mode_t) throws(Errno) {
        _ = try retryingEINTR { Glibc.fchmod(fd, mode) }
    }

    /// The corresponding C function is `fchownat`.
    public static func fchownat(_ dirfd: Int32, _ path: UnsafePointer<CChar>, _ uid: uid_t, _ gid: gid_t, flags: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.fchownat(dirfd, path, uid, gid, flags) }
    }

    /// The corresponding C function is `utimensat`.
    public static func utimensat(_ dirfd: Int32, _ path: UnsafePointer<CChar>, _ times: (timespec, timespec), flags: Int32) throws(Errno) {
        var pair = [times.0, times.1]
        _ = try retryingEINTR { Glibc.utimensat(dirfd, path, &pair, flags) }
    }

    /// The corresponding C function is `futimens`.
    public static func futimens(_ fd: Int32, _ times: (timespec, timespec)) throws(Errno) {
        var pair = [times.0, times.1]
        _ = try retryingEINTR { Glibc.futimens(fd, &pair) }
    }

    /// The corresponding C function is `fstatvfs`.
    public static func fstatvfs(_ fd: Int32) throws(Errno) -> statvfs {
        var st = statvfs()
        _ = try retryingEINTR { Glibc.fstatvfs(fd, &st) }
        return st
    }

    /// The corresponding C function is `fsync`.
    public static func fsync(_ fd: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.fsync(fd) }
    }

    /// The corresponding C function is `fdatasync`.
    public static func fdatasync(_ fd: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.fdatasync(fd) }
    }

    /// The corresponding C function is `syncfs`.
    public static func syncfs(_ fd: Int32) throws(Errno) {
        _ = try retryingEINTR { cvfs_syncfs(fd) }
    }

    /// The corresponding C function is `fallocate`.
    public static func fallocate(_ fd: Int32, mode: Int32, offset: Int64, length: Int64) throws(Errno) {
        _ = try retryingEINTR { cvfs_fallocate(fd, mode, offset, length) }
    }

    /// The corresponding C function is `lseek`.
    public static func lseek(_ fd: Int32, _ offset: Int64, _ whence: Int32) throws(Errno) -> Int64 {
        Int64(try retryingEINTR { Glibc.lseek(fd, off_t(offset), whence) })
    }

    /// The corresponding C function is `copy_file_range`.
    public static func copyFileRange(_ fdIn: Int32, _ offIn: Int64, _ fdOut: Int32, _ offOut: Int64, _ length: Int, flags: UInt32) throws(Errno) -> Int {
        var a = offIn
        var b = offOut
        return try retryingEINTR { cvfs_copy_file_range(fdIn, &a, fdOut, &b, length, flags) }
    }

    /// The corresponding C function is `flock`.
    public static func flock(_ fd: Int32, _ operation: Int32) throws(Errno) {
        _ = try retryingEINTR { cvfs_flock(fd, operation) }
    }

    /// The corresponding C function is `fcntl` (with a `struct flock`).
    public static func fcntlLock(_ fd: Int32, _ command: Int32, _ lock: inout Glibc.flock) throws(Errno) {
        _ = try retryingEINTR { cvfs_fcntl_lock(fd, command, &lock) }
    }

    /// The corresponding C function is `getdents64`.
    public static func getdents64(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Int {
        try retryingEINTR { cvfs_getdents64(fd, buffer.baseAddress, buffer.count) }
    }

    /// The corresponding C function is `fchdir`.
    public static func fchdir(_ fd: Int32) throws(Errno) {
        _ = try retryingEINTR { Glibc.fchdir(fd) }
    }

    /// The corresponding C function is `dup`.
    public static func dup(_ fd: Int32) throws(Errno) -> Int32 {
        try retryingEINTR { cvfs_fcntl_int(fd, F_DUPFD_CLOEXEC, 0) }
    }

    /// The corresponding C function is `getgroups`.
    public static func getgroups() throws(Errno) -> [gid_t] {
        let n = try checked(Glibc.getgroups(0, nil))
        var groups = [gid_t](repeating: 0, count: Int(n))
        let m = try checked(Glibc.getgroups(n, &groups))
        return Array(groups.prefix(Int(m)))
    }

    /// The corresponding C function is `syscall(SYS_setresuid)` (this thread only).
    public static func threadSetresuid(_ r: uid_t, _ e: uid_t, _ s: uid_t) throws(Errno) {
        _ = try checked(cvfs_thread_setresuid(r, e, s))
    }

    /// The corresponding C function is `syscall(SYS_setresgid)` (this thread only).
    public static func threadSetresgid(_ r: gid_t, _ e: gid_t, _ s: gid_t) throws(Errno) {
        _ = try checked(cvfs_thread_setresgid(r, e, s))
    }

    /// The corresponding C function is `syscall(SYS_setgroups)` (this thread only).
    public static func threadSetgroups(_ groups: [gid_t]) throws(Errno) {
        _ = try groups.withUnsafeBufferPointer { (b) throws(Errno) -> Int32 in
            try checked(cvfs_thread_setgroups(b.count, b.baseAddress))
        }
    }

    /// The corresponding C function is `name_to_handle_at`. `handle` holds a `struct file_handle`.
    public static func nameToHandleAt(_ dirfd: Int32, _ path: UnsafePointer<CChar>, _ handle: UnsafeMutableRawPointer, flags: Int32) throws(Errno) -> Int32 {
        var mountID: Int32 = 0
        _ = try retryingEINTR { cvfs_name_to_handle_at(dirfd, path, handle, &mountID, flags) }
        return mountID
    }

    /// The corresponding C function is `open_by_handle_at`.
    public static func openByHandleAt(_ mountFD: Int32, _ handle: UnsafeMutableRawPointer, flags: Int32) throws(Errno) -> Int32 {
        try retryingEINTR { cvfs_open_by_handle_at(mountFD, handle, flags | O_CLOEXEC) }
    }

    /// The corresponding C function is `fgetxattr`.
    public static func fgetxattr(_ fd: Int32, _ name: UnsafePointer<CChar>, _ buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        try retryingEINTR { cvfs_fgetxattr(fd, name, buffer?.baseAddress, buffer?.count ?? 0) }
    }

    /// The corresponding C function is `fsetxattr`.
    public static func fsetxattr(_ fd: Int32, _ name: UnsafePointer<CChar>, _ value: UnsafeRawBufferPointer, flags: Int32) throws(Errno) {
        _ = try retryingEINTR { cvfs_fsetxattr(fd, name, value.baseAddress, value.count, flags) }
    }

    /// The corresponding C function is `flistxattr`.
    public static func flistxattr(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        try retryingEINTR { cvfs_flistxattr(fd, buffer?.baseAddress?.assumingMemoryBound(to: CChar.self), buffer?.count ?? 0) }
    }

    /// The corresponding C function is `fremovexattr`.
    public static func fremovexattr(_ fd: Int32, _ name: UnsafePointer<CChar>) throws(Errno) {
        _ = try retryingEINTR { cvfs_fremovexattr(fd, name) }
    }

    /// The corresponding C function is `getxattr`.
    public static func getxattr(_ path: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>, _ buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        try retryingEINTR { cvfs_getxattr(path, name, buffer?.baseAddress, buffer?.count ?? 0) }
    }

    /// The corresponding C function is `setxattr`.
    public static func setxattr(_ path: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>, _ value: UnsafeRawBufferPointer, flags: Int32) throws(Errno) {
        _ = try retryingEINTR { cvfs_setxattr(path, name, value.baseAddress, value.count, flags) }
    }

    /// The corresponding C function is `listxattr`.
    public static func listxattr(_ path: UnsafePointer<CChar>, _ buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        try retryingEINTR { cvfs_listxattr(path, buffer?.baseAddress?.assumingMemoryBound(to: CChar.self), buffer?.count ?? 0) }
    }

    /// The corresponding C function is `removexattr`.
    public static func removexattr(_ path: UnsafePointer<CChar>, _ name: UnsafePointer<CChar>) throws(Errno) {
        _ = try retryingEINTR { cvfs_removexattr(path, name) }
    }

    /// The corresponding C function is `nanosleep`.
    public static func sleep(nanoseconds: Int) {
        var request = timespec(tv_sec: nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
        var left = timespec()
        while Glibc.nanosleep(&request, &left) == -1 && errno == EINTR { request = left }
    }
}

/// Process identity and per-thread flags.
extension Sys {
    /// The corresponding C function is `geteuid`.
    public static func geteuid() -> uid_t { Glibc.geteuid() }
    /// The corresponding C function is `getegid`.
    public static func getegid() -> gid_t { Glibc.getegid() }

    /// The corresponding C function is `pthread_key_create`. `destructor` runs on
    /// thread exit for each thread whose value is not nil.
    public static func threadKeyCreate(
        destructor: (@convention(c) (UnsafeMutableRawPointer?) -> Void)? = nil
    ) throws(Errno) -> pthread_key_t {
        var key = pthread_key_t()
        let rc = pthread_key_create(&key, destructor)
        if rc != 0 { throw Errno(rc) }
        return key
    }
    /// The corresponding C function is `pthread_getspecific`.
    public static func threadValue(_ key: pthread_key_t) -> UnsafeMutableRawPointer? { pthread_getspecific(key) }
    /// The corresponding C function is `pthread_setspecific`.
    public static func setThreadValue(_ key: pthread_key_t, _ value: UnsafeMutableRawPointer?) {
        _ = pthread_setspecific(key, value)
    }
}
