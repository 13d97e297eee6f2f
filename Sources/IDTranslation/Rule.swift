/// Which kind of id a rule set translates; only used to name the option in messages.
public enum IDKind: String, Sendable {
    case uid
    case gid

    /// The command-line option that carries rules of this kind.
    public var option: String { "--translate-\(rawValue)" }
}

/// One `--translate-uid` / `--translate-gid` rule, in the Rust virtiofsd's syntax.
///
/// Ranges are `[base, base + count)`; `count` is at least 1 and the range may end at
/// 2^32 at the most. Guest-to-host and host-to-guest translation are independent: a
/// `guest` rule says nothing about how host ids are shown to the guest, and unmapped ids
/// pass through unchanged in both directions.
public enum TranslationRule: Sendable, Equatable, CustomStringConvertible {
    /// `guest:GUEST:HOST:COUNT`: guest ids GUEST... become host ids HOST... one to one.
    case guest(guestBase: UInt32, hostBase: UInt32, count: UInt32)
    /// `host:HOST:GUEST:COUNT`: host ids HOST... are shown to the guest as GUEST... one to one.
    case host(hostBase: UInt32, guestBase: UInt32, count: UInt32)
    /// `squash-guest:GUEST:HOST:COUNT`: every guest id in the range becomes the one host id.
    case squashGuest(guestBase: UInt32, host: UInt32, count: UInt32)
    /// `squash-host:HOST:GUEST:COUNT`: every host id in the range is shown as the one guest id.
    case squashHost(hostBase: UInt32, guest: UInt32, count: UInt32)
    /// `forbid-guest:GUEST:COUNT`: these guest ids are refused (EPERM) where they would be
    /// taken on (a caller creating a file) or given to a file (chown, ACL entries).
    case forbidGuest(guestBase: UInt32, count: UInt32)
    /// `map:GUEST:HOST:COUNT`: both `guest:GUEST:HOST:COUNT` and `host:HOST:GUEST:COUNT`.
    case map(guestBase: UInt32, hostBase: UInt32, count: UInt32)

    /// The rule's text, in the form it is parsed from.
    public var description: String {
        switch self {
        case .guest(let g, let h, let n): return "guest:\(g):\(h):\(n)"
        case .host(let h, let g, let n): return "host:\(h):\(g):\(n)"
        case .squashGuest(let g, let h, let n): return "squash-guest:\(g):\(h):\(n)"
        case .squashHost(let h, let g, let n): return "squash-host:\(h):\(g):\(n)"
        case .forbidGuest(let g, let n): return "forbid-guest:\(g):\(n)"
        case .map(let g, let h, let n): return "map:\(g):\(h):\(n)"
        }
    }

    /// Parses one rule, e.g. `map:1000:1000:1` or `squash-guest:0:1001:4294967295`.
    public init(parsing text: String) throws(TranslationError) {
        let fields = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard let type = fields.first, !type.isEmpty else {
            throw .malformed(text, "expected TYPE:...; TYPE is one of \(TranslationRule.typeNames)")
        }
        let wanted = type == "forbid-guest" ? 2 : 3
        guard TranslationRule.typeList.contains(type) else {
            throw .malformed(text, "unknown type \"\(type)\"; one of \(TranslationRule.typeNames)")
        }
        guard fields.count == wanted + 1 else {
            let form = wanted == 2 ? "\(type):BASE:COUNT" : "\(type):SOURCE:TARGET:COUNT"
            throw .malformed(text, "expected \(form) (\(wanted) numbers after the type)")
        }
        var numbers: [UInt32] = []
        for field in fields.dropFirst() {
            guard let n = parseID(field) else {
                throw .malformed(text, "\"\(field)\" is not a number from 0 to 4294967295")
            }
            numbers.append(n)
        }
        let count = numbers[wanted - 1]
        guard count > 0 else { throw .malformed(text, "the count must be at least 1") }
        switch type {
        case "guest": self = .guest(guestBase: numbers[0], hostBase: numbers[1], count: count)
        case "host": self = .host(hostBase: numbers[0], guestBase: numbers[1], count: count)
        case "squash-guest": self = .squashGuest(guestBase: numbers[0], host: numbers[1], count: count)
        case "squash-host": self = .squashHost(hostBase: numbers[0], guest: numbers[1], count: count)
        case "forbid-guest": self = .forbidGuest(guestBase: numbers[0], count: count)
        default: self = .map(guestBase: numbers[0], hostBase: numbers[1], count: count)
        }
        // Every range, source and 1:1 target alike, must end by 2^32.
        for (base, what) in ranges where UInt64(base) + UInt64(count) > 1 << 32 {
            throw .malformed(text, "the \(what) range \(base)+\(count) runs past 4294967295")
        }
    }

    static let typeList = ["guest", "host", "squash-guest", "squash-host", "forbid-guest", "map"]
    static var typeNames: String { typeList.joined(separator: ", ") }

    /// Every range start the rule covers with its count, with a word for messages.
    var ranges: [(UInt32, String)] {
        switch self {
        case .guest(let g, let h, _), .map(let g, let h, _): return [(g, "guest"), (h, "host")]
        case .host(let h, let g, _): return [(h, "host"), (g, "guest")]
        case .squashGuest(let g, _, _), .forbidGuest(let g, _): return [(g, "guest")]
        case .squashHost(let h, _, _): return [(h, "host")]
        }
    }
}

/// A decimal id: digits only, no sign, at most 4294967295.
func parseID(_ text: String) -> UInt32? {
    guard !text.isEmpty, text.utf8.count <= 10, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
    return UInt32(text)
}

/// Why a set of rules was refused; `description` is the start-up error line.
public enum TranslationError: Error, Equatable, CustomStringConvertible {
    /// The rule text (as given) and what is wrong with it.
    case malformed(String, String)
    /// Two rules whose source ranges overlap on the named side ("guest" or "host").
    case overlap(String, String, side: String)

    public var description: String {
        switch self {
        case .malformed(let rule, let why):
            return "invalid rule \"\(rule)\": \(why)"
        case .overlap(let rule, let earlier, let side):
            return "rule \"\(rule)\" overlaps \"\(earlier)\": both translate some of the same \(side) ids; give each \(side) id at most one rule"
        }
    }
}
