/// One range of ids for a user namespace (`--uid-map`, `--gid-map`), written to
/// /proc/self/{uid,gid}_map: `count` ids from `inside` stand for those from `outside`.
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

    /// Parses the command-line form ":inside:outside:count:". The count is at least 1 and
    /// neither range may reach 4294967295 (the kernel's "no id"), as the kernel requires.
    public init(parsing text: String) throws(IDMapError) {
        let bytes = Array(text.utf8)
        guard bytes.count >= 2, bytes.first == UInt8(ascii: ":"), bytes.last == UInt8(ascii: ":") else {
            throw IDMapError(text: text, reason: "it must have the form :inside:outside:count:")
        }
        let fields = bytes.dropFirst().dropLast().split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        guard fields.count == 3 else {
            throw IDMapError(text: text, reason: "it must have three numbers, :inside:outside:count:")
        }
        var numbers: [UInt32] = []
        for field in fields {
            guard field.count <= 10, let value = decimalValue(field), let n = UInt32(exactly: value) else {
                throw IDMapError(text: text, reason: "\"\(String(decoding: field, as: UTF8.self))\" is not a number from 0 to 4294967295")
            }
            numbers.append(n)
        }
        self.init(inside: numbers[0], outside: numbers[1], count: numbers[2])
        guard count > 0 else { throw IDMapError(text: text, reason: "the count must be at least 1") }
        let (insideEnd, o1) = inside.addingReportingOverflow(count - 1)
        let (outsideEnd, o2) = outside.addingReportingOverflow(count - 1)
        guard !o1, !o2, insideEnd != UInt32.max, outsideEnd != UInt32.max else {
            throw IDMapError(text: text, reason: "the range runs past the largest id (4294967294)")
        }
    }

    /// The line the kernel expects in a uid_map/gid_map file.
    public var mapFileLine: String { "\(inside) \(outside) \(count)\n" }

    /// The command-line form, ":inside:outside:count:".
    public var description: String { ":\(inside):\(outside):\(count):" }
}

/// An id map that does not parse, and why.
public struct IDMapError: Error, Sendable, Equatable, CustomStringConvertible {
    public var text: String
    public var reason: String
    public var description: String { "invalid id map \"\(text)\": \(reason)" }
}

/// One `+name` or `-name` entry of a `--modcaps` list.
public struct CapabilityChange: Sendable, Equatable, CustomStringConvertible {
    /// true for `+` (keep), false for `-` (drop).
    public var add: Bool
    /// Lower-case capability name without `cap_`, as libcap-ng spells it (`sys_admin`).
    public var name: String

    public init(add: Bool, name: String) {
        self.add = add
        self.name = name
    }

    /// Parses `+sys_admin:-chown`: names are lower-cased and lose a `cap_` prefix; an empty
    /// text is no change. nil when an item has no sign, an empty name, or a byte that is
    /// not a letter, digit or underscore. Whether the name is a real capability is the
    /// sandbox's question (it asks libcap-ng).
    public static func parseList(_ text: String) -> [CapabilityChange]? {
        guard !text.isEmpty else { return [] }
        var changes: [CapabilityChange] = []
        for item in text.split(separator: ":", omittingEmptySubsequences: false) {
            guard let sign = item.first, sign == "+" || sign == "-" else { return nil }
            var name = item.dropFirst().lowercased()
            if name.hasPrefix("cap_") { name.removeFirst(4) }
            let valid = !name.isEmpty && name.utf8.allSatisfy {
                ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F
            }
            guard valid else { return nil }
            changes.append(CapabilityChange(add: sign == "+", name: name))
        }
        return changes
    }

    public var description: String { (add ? "+" : "-") + name }
}

/// `digits` read as a decimal number; nil when empty, when a byte is not a digit, or
/// when the value does not fit in 64 bits.
func decimalValue<Digits: Collection<UInt8>>(_ digits: Digits) -> UInt64? {
    guard !digits.isEmpty else { return nil }
    var value: UInt64 = 0
    for d in digits {
        guard d >= UInt8(ascii: "0") && d <= UInt8(ascii: "9") else { return nil }
        let (times, o1) = value.multipliedReportingOverflow(by: 10)
        let (sum, o2) = times.addingReportingOverflow(UInt64(d - UInt8(ascii: "0")))
        if o1 || o2 { return nil }
        value = sum
    }
    return value
}
