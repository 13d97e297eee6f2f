/// How the serving process is isolated from the rest of the host.
public enum SandboxMode: String, Sendable, CaseIterable {
    /// New mount, pid and network namespaces (plus a user namespace when not root);
    /// the shared directory becomes the root of the mount namespace.
    case namespace
    /// chroot(2) into the shared directory; needs root.
    case chroot
    /// No isolation: only for when an outer sandbox (container, VM) does the job.
    case none
}

/// What the seccomp filter does with a system call that is not on the allow-list.
public enum SeccompAction: String, Sendable, CaseIterable {
    /// No filter at all.
    case none
    /// Kill the whole process (SIGSYS).
    case kill
    /// Let the call through and write an audit record: for finding missing entries.
    case log
    /// Send SIGSYS to the calling thread (debuggers can catch it).
    case trap
}

/// One range of ids for a user namespace, written to /proc/self/{uid,gid}_map.
public struct IDMap: Sendable, Equatable, CustomStringConvertible {
    /// First id as seen inside the namespace.
    public var inside: UInt32
    /// First id on the host that `inside` stands for.
    public var outside: UInt32
    /// Number of consecutive ids mapped.
    public var count: UInt32

    public init(inside: UInt32, outside: UInt32, count: UInt32) {
        self.inside = inside
        self.outside = outside
        self.count = count
    }

    /// The line the kernel expects in a uid_map/gid_map file.
    public var mapFileLine: String { "\(inside) \(outside) \(count)\n" }

    /// The command-line form, ":inside:outside:count:".
    public var description: String { ":\(inside):\(outside):\(count):" }
}

/// Everything the sandbox needs to know, filled in from the command line.
public struct SandboxConfiguration: Sendable {
    public var mode: SandboxMode
    /// Absolute path of the directory shared with the guest; must exist.
    public var sharedDirectory: String
    public var seccomp: SeccompAction
    /// syslog(3) talks to /dev/log with sendto/connect; only then are those allowed.
    public var syslog: Bool
    /// `--modcaps` edits to the kept capability set.
    public var capabilityEdits: [CapabilityEdit]
    /// Keep CAP_DAC_READ_SEARCH: open_by_handle_at needs it when file handles are in use.
    public var keepDacReadSearch: Bool
    /// nil: raise to the system maximum (fs.nr_open), capped at `Sandbox.defaultFileLimitCap`;
    /// 0: leave the limit as it is.
    public var rlimitNofile: UInt64?
    /// Ranges for the user namespace, in order; empty means the current uid (gid) mapped
    /// onto itself. Checked by `checkIDMaps` before anything is written.
    public var uidMap: [IDMap]
    public var gidMap: [IDMap]

    public init(mode: SandboxMode = .namespace,
                sharedDirectory: String,
                seccomp: SeccompAction = .kill,
                syslog: Bool = false,
                capabilityEdits: [CapabilityEdit] = [],
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

/// What the serving process needs after `Sandbox.enter`.
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

/// Parses a user-namespace id map given as ":inside:outside:count:".
public func parseIDMap(_ s: String) throws(SandboxError) -> IDMap {
    let bytes = Array(s.utf8)
    guard bytes.count >= 2, bytes.first == UInt8(ascii: ":"), bytes.last == UInt8(ascii: ":") else {
        throw .invalidIDMap(s, "it must have the form :inside:outside:count:")
    }
    let fields = bytes.dropFirst().dropLast().split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
    guard fields.count == 3 else {
        throw .invalidIDMap(s, "it must have three numbers, :inside:outside:count:")
    }
    var numbers: [UInt32] = []
    for field in fields {
        guard let n = parseUInt32(field) else {
            throw .invalidIDMap(s, "\"\(String(decoding: field, as: UTF8.self))\" is not a number from 0 to 4294967295")
        }
        numbers.append(n)
    }
    let map = IDMap(inside: numbers[0], outside: numbers[1], count: numbers[2])
    guard map.count > 0 else { throw .invalidIDMap(s, "the count must be at least 1") }
    // The last id of either range must still be a valid 32-bit id (2^32-1 means "no id").
    let (insideEnd, o1) = map.inside.addingReportingOverflow(map.count - 1)
    let (outsideEnd, o2) = map.outside.addingReportingOverflow(map.count - 1)
    guard !o1, !o2, insideEnd != UInt32.max, outsideEnd != UInt32.max else {
        throw .invalidIDMap(s, "the range runs past the largest id (4294967294)")
    }
    return map
}

private func parseUInt32(_ digits: ArraySlice<UInt8>) -> UInt32? {
    guard digits.count <= 10, let value = decimalValue(digits) else { return nil }
    return UInt32(exactly: value)
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
