#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix
import Options

/// Everything the sandbox needs to know, filled in from the command line.
public struct SandboxConfiguration: Sendable {
    public var mode: SandboxMode
    /// Absolute path of the directory shared with the guest; must exist.
    public var sharedDirectory: String
    public var seccomp: SeccompAction
    /// syslog(3) talks to /dev/log with sendto/connect; only then are those allowed.
    public var syslog: Bool
    /// `--modcaps` edits to the kept capability set, in order; names are checked with
    /// `Sandboxing.resolve` before the sandbox is entered.
    public var capabilityEdits: [CapabilityChange]
    /// Keep CAP_DAC_READ_SEARCH: open_by_handle_at needs it when file handles are in use.
    public var keepDacReadSearch: Bool
    /// nil: raise to the system maximum (fs.nr_open), capped at `Sandboxing.defaultFileLimitCap`;
    /// 0: leave the limit as it is.
    public var rlimitNofile: UInt64?
    /// Ranges for the user namespace, in order; empty means the current uid (gid) mapped
    /// onto itself. Checked by `checkIDMaps` before anything is written.
    public var uidMap: [IDMap]
    public var gidMap: [IDMap]
    /// The daemon's socket file, removed by the namespace parent when the serving child
    /// has ended (the child cannot reach the path after pivot_root).
    public var socketFile: SocketFile? = nil

    public init(mode: SandboxMode = .namespace,
                sharedDirectory: String,
                seccomp: SeccompAction = .kill,
                syslog: Bool = false,
                capabilityEdits: [CapabilityChange] = [],
                keepDacReadSearch: Bool = false,
                rlimitNofile: UInt64? = nil,
                uidMap: [IDMap] = [],
                gidMap: [IDMap] = []) {
        self.mode = mode
        self.sharedDirectory = sharedDirectory
        self.seccomp = seccomp
        self.syslog = syslog
        self.capabilityEdits = capabilityEdits
        self.keepDacReadSearch = keepDacReadSearch
        self.rlimitNofile = rlimitNofile
        self.uidMap = uidMap
        self.gidMap = gidMap
    }
}

/// A socket file the daemon created, known by its identity so that only that file is
/// removed, never one a later daemon bound at the same path. Its directory is held open
/// (O_PATH): pivot_root moves the root of every process in the mount namespace, the
/// waiting namespace parent's too, so by the end the path no longer leads anywhere.
/// The serving child closes the descriptor right after the fork.
public struct SocketFile: Sendable, Equatable {
    public let directoryFD: Int32
    public let name: String
    public let device: UInt64
    public let inode: UInt64

    /// The socket at `path` as it is now; nil when there is none (or its directory
    /// cannot be opened).
    public init?(path: String) {
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !name.isEmpty,
              let fd = try? Sys.openat(AT_FDCWD, directory, CVFS_O_PATH | O_DIRECTORY | O_CLOEXEC) else { return nil }
        guard let st = try? Sys.fstatat(fd, name, flags: AT_SYMLINK_NOFOLLOW), (st.st_mode & S_IFMT) == S_IFSOCK else {
            Sys.close(fd)
            return nil
        }
        directoryFD = fd
        self.name = name
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    /// Unlinks the file if it is still this socket (a daemon started later on the same
    /// path has bound a new one, which stays).
    public func remove() {
        guard let st = try? Sys.fstatat(directoryFD, name, flags: AT_SYMLINK_NOFOLLOW),
              (st.st_mode & S_IFMT) == S_IFSOCK, UInt64(st.st_dev) == device, UInt64(st.st_ino) == inode else { return }
        try? Sys.unlinkat(directoryFD, name, flags: 0)
    }

    /// Lets go of the directory (the serving child must not hold a host directory).
    public func close() { Sys.close(directoryFD) }
}

/// What the serving process needs after `Sandboxing.enter`.
public struct SandboxResult: Sendable, Equatable {
    /// The shared directory as this process now sees it: "/" after namespace or chroot,
    /// the original path in mode none.
    public var root: String
    /// An O_PATH descriptor of /proc/self/fd, opened while /proc was still in view
    /// (namespace and chroot modes). Inodes are reopened through it. In mode none it is
    /// opened too when /proc is mounted, else nil.
    public var procSelfFD: Int32?

    public init(root: String, procSelfFD: Int32?) {
        self.root = root
        self.procSelfFD = procSelfFD
    }
}

extension IDMap {
    /// One past the last inside id (64-bit: a range may end at 2^32).
    var insideEnd: UInt64 { UInt64(inside) + UInt64(count) }
    /// One past the last outside id.
    var outsideEnd: UInt64 { UInt64(outside) + UInt64(count) }

    /// Whether host id `id` is one of the outside ids of this range.
    func containsOutside(_ id: UInt32) -> Bool { UInt64(id) >= UInt64(outside) && UInt64(id) < outsideEnd }
    /// Whether namespace id `id` is one of the inside ids of this range.
    func containsInside(_ id: UInt32) -> Bool { UInt64(id) >= UInt64(inside) && UInt64(id) < insideEnd }
}

/// The most lines the kernel takes in one uid_map or gid_map (since Linux 4.15).
public let maxIDMapRanges = 340

/// Checks ranges for one map file the way the kernel will, so a bad map is a clear
/// start-up error instead of an EINVAL from the write: at most `maxIDMapRanges` lines,
/// and neither the inside nor the outside ranges may overlap. `kind` is "uid" or "gid".
public func checkIDMaps(_ maps: [IDMap], kind: String) throws(SandboxError) {
    guard maps.count <= maxIDMapRanges else {
        throw .invalidIDMap("--\(kind)-map", "\(maps.count) ranges given; the kernel takes at most \(maxIDMapRanges)")
    }
    for (i, a) in maps.enumerated() {
        guard a.count > 0 else { throw .invalidIDMap(a.description, "the count must be at least 1") }
        for b in maps[..<i] {
            if UInt64(a.inside) < b.insideEnd && UInt64(b.inside) < a.insideEnd {
                throw .invalidIDMap(a.description, "its namespace ids overlap those of \(b.description)")
            }
            if UInt64(a.outside) < b.outsideEnd && UInt64(b.outside) < a.outsideEnd {
                throw .invalidIDMap(a.description, "its host ids overlap those of \(b.description)")
            }
        }
    }
}

/// The contents of a uid_map/gid_map file for `maps`: one line per range, written in a
/// single write(2) as the kernel requires.
public func idMapFileText(_ maps: [IDMap]) -> String {
    maps.map(\.mapFileLine).joined()
}

/// Whether a process running as host id `own` may write `maps` itself from inside a new
/// user namespace: only one range, of one id, whose host id is its own. Anything else
/// needs a privileged writer (root, or the setuid newuidmap/newgidmap).
public func isOwnIDOnly(_ maps: [IDMap], own: UInt32) -> Bool {
    maps.count == 1 && maps[0].count == 1 && maps[0].outside == own
}

/// The namespace id that host id `host` appears as under `maps`; nil when unmapped.
public func insideID(of host: UInt32, in maps: [IDMap]) -> UInt32? {
    for m in maps where m.containsOutside(host) { return m.inside &+ (host &- m.outside) }
    return nil
}

func isASCIIDigit(_ byte: UInt8) -> Bool {
    byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
}

/// `digits` read as a decimal number; nil when empty, when a byte is not a digit, or
/// when the value does not fit in 64 bits.
func decimalValue<Digits: Collection<UInt8>>(_ digits: Digits) -> UInt64? {
    guard !digits.isEmpty else { return nil }
    var value: UInt64 = 0
    for d in digits {
        guard isASCIIDigit(d) else { return nil }
        let (times, o1) = value.multipliedReportingOverflow(by: 10)
        let (sum, o2) = times.addingReportingOverflow(UInt64(d - UInt8(ascii: "0")))
        if o1 || o2 { return nil }
        value = sum
    }
    return value
}
