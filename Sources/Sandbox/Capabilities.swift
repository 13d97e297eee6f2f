import CCapNG
import Options
import Posix

/// A `--modcaps` change with the kernel's number for its capability.
public struct CapabilityEdit: Sendable, Equatable, CustomStringConvertible {
    public var change: CapabilityChange
    /// The kernel's capability number.
    public var capability: Int32

    /// nil when libcap-ng knows no capability named `change.name`.
    public init?(_ change: CapabilityChange) {
        let number = capng_name_to_capability(change.name)
        guard number >= 0 else { return nil }
        self.change = change
        self.capability = number
    }

    public var description: String { change.description }
}

extension Sandboxing {
    /// The capability numbers of `changes`, in order; the first unknown name is an error.
    public static func resolve(_ changes: [CapabilityChange]) throws(SandboxError) -> [CapabilityEdit] {
        var edits: [CapabilityEdit] = []
        for change in changes {
            guard let edit = CapabilityEdit(change) else { throw .unknownCapability(change.name) }
            edits.append(edit)
        }
        return edits
    }

    /// The capabilities a root daemon keeps, each with why the passthrough backend needs it.
    public static let keptCapabilities: [(name: String, reason: String)] = [
        ("chown", "create files owned by the guest caller; SETATTR uid/gid"),
        ("dac_override", "the daemon acts for every guest user, whose permissions the guest kernel already checked"),
        ("fowner", "utimensat/chmod/xattr on files the daemon does not own"),
        ("fsetid", "keep setgid on files whose group the daemon is not in; dropped per request for killpriv"),
        ("setgid", "switch fsgid/supplementary groups per request"),
        ("setuid", "switch fsuid per request"),
        ("mknod", "MKNOD of device nodes for the guest"),
        ("setfcap", "set security.capability xattrs for the guest"),
    ]

    /// CAP_DAC_READ_SEARCH, kept with `keepDacReadSearch`: open_by_handle_at needs it (the
    /// daemon always asks, since its descriptor budget falls back to file handles).
    public static let fileHandleCapability = "dac_read_search"

    /// The capability numbers that stay in effective, permitted and bounding sets:
    /// the kept table, plus DAC_READ_SEARCH when asked, then the `--modcaps` edits in order.
    public static func capabilitiesToKeep(_ c: SandboxConfiguration) -> Set<Int32> {
        var keep = Set<Int32>()
        var names = keptCapabilities.map(\.name)
        if c.keepDacReadSearch { names.append(fileHandleCapability) }
        for name in names {
            let number = capng_name_to_capability(name)
            if number >= 0 { keep.insert(number) }
        }
        for change in c.capabilityEdits {
            let number = capng_name_to_capability(change.name)
            guard number >= 0 else { continue }  // refused by `resolve` before the sandbox
            if change.add { keep.insert(number) } else { keep.remove(number) }
        }
        return keep
    }

    /// The same set as the bit mask /proc/PID/status shows in CapEff/CapPrm/CapBnd.
    public static func capabilityMask(_ capabilities: Set<Int32>) -> UInt64 {
        var mask: UInt64 = 0
        for cap in capabilities where cap >= 0 && cap < 64 { mask |= 1 << UInt64(cap) }
        return mask
    }

    /// Keeps only `capabilitiesToKeep(c)` in the effective and permitted sets and in the
    /// bounding set; inheritable is emptied (ambient follows, the kernel drops ambient
    /// capabilities that are no longer permitted). A process with no capabilities
    /// (unprivileged, no user namespace) has nothing to drop.
    public static func dropCapabilities(_ c: SandboxConfiguration, logger: Logger) throws(SandboxError) {
        _ = try resolve(c.capabilityEdits)
        guard capng_get_caps_process() == 0 else { throw .capabilities("reading the current capabilities") }
        if capng_have_capabilities(CAPNG_SELECT_CAPS) == CAPNG_NONE {
            logger.debug("sandbox: no capabilities held, nothing to drop")
            return
        }
        let keep = capabilitiesToKeep(c)
        capng_clear(CAPNG_SELECT_BOTH)
        let sets = capng_type_t(CAPNG_EFFECTIVE.rawValue | CAPNG_PERMITTED.rawValue | CAPNG_BOUNDING_SET.rawValue)
        for cap in keep.sorted() {
            guard capng_update(CAPNG_ADD, sets, UInt32(cap)) == 0 else {
                throw .capabilities("keeping capability \(cap)")
            }
        }
        guard capng_apply(CAPNG_SELECT_BOTH) == 0 else { throw .capabilities("capng_apply") }
        logger.debug("sandbox: capabilities now 0x\(String(capabilityMask(keep), radix: 16))")
    }

    /// Empties every capability set, bounding included; best effort (the namespace parent).
    static func dropAllCapabilities() {
        capng_clear(CAPNG_SELECT_BOTH)
        _ = capng_apply(CAPNG_SELECT_BOTH)
    }
}
