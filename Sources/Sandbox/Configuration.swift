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
    /// Maps for the user namespace; nil means the current uid/gid mapped onto itself.
    public var uidMap: IDMap?
    public var gidMap: IDMap?

    public init(mode: SandboxMode = .namespace,
                sharedDirectory: String,
                seccomp: SeccompAction = .kill,
                syslog: Bool = false,
                capabilityEdits: [CapabilityChange] = [],
                keepDacReadSearch: Bool = false,
                rlimitNofile: UInt64? = nil,
                uidMap: IDMap? = nil,
                gidMap: IDMap? = nil) {
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
