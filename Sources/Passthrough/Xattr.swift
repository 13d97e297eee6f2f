#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import Posix
import XattrMap

/// The two questions the backend asks the xattr name rules (`XattrMap` answers them).
protocol XattrNameMapping: Sendable {
    func mapClientName(_ name: UnsafeBufferPointer<UInt8>) -> ClientNameMapping
    func mapServerName(_ name: UnsafeBufferPointer<UInt8>) -> ServerNameMapping
}

extension XattrMap: XattrNameMapping {}

extension PassthroughFileSystem {
    /// Regular files and directories are opened and use f*xattr; symlinks and
    /// special files cannot be opened safely and go through their /proc/self/fd path.
    func withXattrTarget<T>(_ inode: InodeData,
                            fd fdBody: (Int32) throws(Errno) -> T,
                            path pathBody: (UnsafePointer<CChar>) throws(Errno) -> T) throws(Errno) -> T {
        if inode.isRegular || inode.isDirectory {
            return try withIOFD(inode, flags: O_RDONLY) { (fd) throws(Errno) -> T in try fdBody(fd) }
        }
        return try withProcPath(inode) { (path) throws(Errno) -> T in try pathBody(path) }
    }

    /// The host name for a guest xattr name (after the xattr map), NUL-terminated.
    /// `reading`: a name a `bad` rule refuses "does not exist" (ENODATA) for getxattr, as in QEMU's virtiofsd.
    func hostXattrName<T>(_ name: FileName, reading: Bool = false, _ body: (UnsafePointer<CChar>) throws(Errno) -> T) throws(Errno) -> T {
        guard let map = xattrNames else { return try body(name.cString) }
        switch map.mapClientName(name.bytes) {
        case .pass:
            return try body(name.cString)
        case .rename(let bytes):
            var terminated = bytes.map { CChar(bitPattern: $0) }
            terminated.append(0)
            return try terminated.withUnsafeBufferPointer { (b) throws(Errno) -> T in
                try body(b.baseAddress!)
            }
        case .deny(let errno):
            if reading && errno == EPERM { throw Errno.noData }
            throw Errno(errno)
        }
    }

    /// The host drops `security.capability` itself on write, truncate and chown;
    /// under a renamed name it is an ordinary xattr, so we drop it.
    func killRemappedCapability(fd: Int32) {
        guard let name = remappedCapabilityName else { return }
        name.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else { return }
            _ = try? Sys.fremovexattr(fd, base)
        }
    }

    func killRemappedCapability(_ inode: InodeData) {
        guard remappedCapabilityName != nil, inode.isRegular else { return }
        if let fd = try? reopen(inode, flags: O_RDONLY | O_NONBLOCK) {
            killRemappedCapability(fd: fd)
            Sys.close(fd)
        }
    }

    /// SETXATTR: sets the host name the xattr map gives (f*xattr on a regular file or
    /// directory, the /proc/self/fd path otherwise); ACL values carry host ids. An access
    /// ACL set with FUSE_SETXATTR_ACL_KILL_SGID drops setgid when the caller is not root
    /// and is outside the file's group. ENOSYS when xattrs are off, EROFS on a read-only share.
    public func setxattr(_ ctx: RequestContext, node: NodeID, name: FileName, value: UnsafeRawBufferPointer, flags: UInt32, extFlags: UInt32) throws(Errno) {
        guard configuration.xattrEnabled else { throw Errno.noSys }
        try ensureWritable()
        if name.bytes.contains(0) { throw Errno.invalidArgument }
        if let translated = try hostACLValue(name, value) {
            // withUnsafeBytes rethrows untyped errors; carry the Errno out by hand.
            let failure = translated.withUnsafeBytes { (hostValue) -> Errno? in
                do throws(Errno) {
                    try setxattr(ctx, node: node, hostValue: hostValue, name: name, flags: flags, extFlags: extFlags)
                    return nil
                } catch { return error }
            }
            if let failure { throw failure }
            return
        }
        try setxattr(ctx, node: node, hostValue: value, name: name, flags: flags, extFlags: extFlags)
    }

    /// SETXATTR once the value holds host ids.
    func setxattr(_ ctx: RequestContext, node: NodeID, hostValue value: UnsafeRawBufferPointer, name: FileName,
                  flags: UInt32, extFlags: UInt32) throws(Errno) {
        let data = try inode(node)
        let hostFlags = Int32(bitPattern: flags) & (CVFS_XATTR_CREATE | CVFS_XATTR_REPLACE)
        let isAccessACL = name.bytes.elementsEqual("system.posix_acl_access".utf8)
        try hostXattrName(name) { (hostName) throws(Errno) in
            try withXattrTarget(data, fd: { (fd) throws(Errno) in
                try Sys.fsetxattr(fd, hostName, value, flags: hostFlags)
                // Setting an access ACL may change the mode; a caller outside the group loses setgid.
                if isAccessACL && extFlags & UInt32(FUSE_SETXATTR_ACL_KILL_SGID) != 0 {
                    let st = try Sys.fstat(fd)
                    if st.st_mode & S_ISGID != 0 && ctx.uid != 0 && st.st_gid != callerHostGID(ctx.gid) {
                        try Sys.fchmod(fd, st.st_mode & 0o7777 & ~S_ISGID)
                    }
                }
            }, path: { (path) throws(Errno) in
                try Sys.setxattr(path, hostName, value, flags: hostFlags)
            })
        }
    }

    /// GETXATTR: the value under the mapped host name; a zero-sized buffer asks for the
    /// size. ACL values come back with guest ids.
    public func getxattr(_ ctx: RequestContext, node: NodeID, name: FileName, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        guard configuration.xattrEnabled else { throw Errno.noSys }
        if name.bytes.contains(0) { throw Errno.invalidArgument }
        let data = try inode(node)
        // A zero-sized buffer is a size query, as for the system call.
        let target = (buffer?.count ?? 0) == 0 ? nil : buffer
        let size = try hostXattrName(name, reading: true) { (hostName) throws(Errno) -> Int in
            try withXattrTarget(data, fd: { (fd) throws(Errno) -> Int in
                try Sys.fgetxattr(fd, hostName, target)
            }, path: { (path) throws(Errno) -> Int in
                try Sys.getxattr(path, hostName, target)
            })
        }
        if let target { guestACLValue(name, UnsafeMutableRawBufferPointer(rebasing: target.prefix(size))) }
        return size
    }

    /// LISTXATTR: the host's names, filtered and renamed by the xattr map when there is
    /// one (sizes are of what the guest gets); a zero-sized buffer asks for the size.
    public func listxattr(_ ctx: RequestContext, node: NodeID, into buffer: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
        guard configuration.xattrEnabled else { throw Errno.noSys }
        let data = try inode(node)
        let target = (buffer?.count ?? 0) == 0 ? nil : buffer
        func list(_ into: UnsafeMutableRawBufferPointer?) throws(Errno) -> Int {
            try withXattrTarget(data, fd: { (fd) throws(Errno) -> Int in
                try Sys.flistxattr(fd, into)
            }, path: { (path) throws(Errno) -> Int in
                try Sys.listxattr(path, into)
            })
        }
        guard let map = xattrNames else { return try list(target) }

        // With a map, read the whole host list, then filter and rename; sizes are of the result.
        var hostList: [UInt8] = []
        var attempts = 0
        while true {
            let size = try list(nil)
            if size == 0 { break }
            hostList = [UInt8](repeating: 0, count: size)
            let result = hostList.withUnsafeMutableBytes { (raw) -> Result<Int, Errno> in
                Result { () throws(Errno) -> Int in try list(raw) }
            }
            switch result {
            case .success(let n):
                hostList.removeSubrange(n...)
            case .failure(let e) where e == .range && attempts < 8:
                attempts += 1 // the list grew between the two calls
                continue
            case .failure(let e):
                throw e
            }
            break
        }
        var guestList: [UInt8] = []
        for name in hostList.split(separator: 0, omittingEmptySubsequences: true) {
            let mapping = name.withUnsafeBufferPointer { map.mapServerName($0) }
            switch mapping {
            case .pass: guestList.append(contentsOf: name)
            case .rename(let renamed): guestList.append(contentsOf: renamed)
            case .hide: continue
            }
            guestList.append(0)
        }
        guard let target else { return guestList.count }
        guard guestList.count <= target.count else { throw Errno.range }
        guestList.withUnsafeBytes { target.copyMemory(from: $0) }
        return guestList.count
    }

    /// REMOVEXATTR: removes the mapped host name. EROFS on a read-only share.
    public func removexattr(_ ctx: RequestContext, node: NodeID, name: FileName) throws(Errno) {
        guard configuration.xattrEnabled else { throw Errno.noSys }
        try ensureWritable()
        if name.bytes.contains(0) { throw Errno.invalidArgument }
        let data = try inode(node)
        try hostXattrName(name) { (hostName) throws(Errno) in
            try withXattrTarget(data, fd: { (fd) throws(Errno) in
                try Sys.fremovexattr(fd, hostName)
            }, path: { (path) throws(Errno) in
                try Sys.removexattr(path, hostName)
            })
        }
    }
}
