/// Translation of one kind of id (uids or gids) between the guest and the host, built
/// from `TranslationRule`s. Ids no rule covers are the same on both sides.
///
/// Lookups are a binary search over at most one entry per rule; the table is immutable
/// after `init`, so it is shared by every request thread without locking.
public struct IDTranslation: Sendable, Equatable {
    /// What happens to an id inside an entry's range.
    enum Action: Sendable, Equatable {
        /// One to one onto the target range starting here.
        case offset(UInt32)
        /// All onto this one id.
        case squash(UInt32)
        /// Refused (guest to host only).
        case forbid
    }

    struct Entry: Sendable, Equatable {
        var start: UInt32
        /// One past the last id (2^32 at the most).
        var end: UInt64
        var action: Action
        /// The rule this came from, for messages.
        var rule: String
    }

    /// Sorted by `start`, no two overlapping.
    let guestToHost: [Entry]
    let hostToGuest: [Entry]

    /// Translation for `rules` in the order given; `TranslationError.overlap` when two rules
    /// claim the same guest id (guest, squash-guest, forbid-guest, map) or the same host id
    /// (host, squash-host, map).
    public init(rules: [TranslationRule]) throws(TranslationError) {
        var toHost: [Entry] = []
        var toGuest: [Entry] = []
        for rule in rules {
            let text = rule.description
            switch rule {
            case .guest(let g, let h, let n):
                try Self.add(Entry(start: g, end: UInt64(g) + UInt64(n), action: .offset(h), rule: text), to: &toHost, side: "guest")
            case .host(let h, let g, let n):
                try Self.add(Entry(start: h, end: UInt64(h) + UInt64(n), action: .offset(g), rule: text), to: &toGuest, side: "host")
            case .squashGuest(let g, let h, let n):
                try Self.add(Entry(start: g, end: UInt64(g) + UInt64(n), action: .squash(h), rule: text), to: &toHost, side: "guest")
            case .squashHost(let h, let g, let n):
                try Self.add(Entry(start: h, end: UInt64(h) + UInt64(n), action: .squash(g), rule: text), to: &toGuest, side: "host")
            case .forbidGuest(let g, let n):
                try Self.add(Entry(start: g, end: UInt64(g) + UInt64(n), action: .forbid, rule: text), to: &toHost, side: "guest")
            case .map(let g, let h, let n):
                try Self.add(Entry(start: g, end: UInt64(g) + UInt64(n), action: .offset(h), rule: text), to: &toHost, side: "guest")
                try Self.add(Entry(start: h, end: UInt64(h) + UInt64(n), action: .offset(g), rule: text), to: &toGuest, side: "host")
            }
        }
        guestToHost = toHost.sorted { $0.start < $1.start }
        hostToGuest = toGuest.sorted { $0.start < $1.start }
    }

    /// Parses and builds in one step: each string is one rule, as given to `kind.option`.
    /// Errors name the option.
    public init(parsing rules: [String], kind: IDKind) throws(IDTranslationSetupError) {
        var parsed: [TranslationRule] = []
        do throws(TranslationError) {
            for text in rules { parsed.append(try TranslationRule(parsing: text)) }
            try self.init(rules: parsed)
        } catch {
            throw IDTranslationSetupError(option: kind.option, error: error)
        }
    }

    static func add(_ entry: Entry, to entries: inout [Entry], side: String) throws(TranslationError) {
        for other in entries where UInt64(entry.start) < other.end && UInt64(other.start) < entry.end {
            throw .overlap(entry.rule, other.rule, side: side)
        }
        entries.append(entry)
    }

    /// No rules at all: every id is itself on both sides.
    public var isIdentity: Bool { guestToHost.isEmpty && hostToGuest.isEmpty }

    /// The host id for guest id `id`; nil when a forbid-guest rule refuses it.
    public func toHost(_ id: UInt32) -> UInt32? {
        guard let entry = Self.find(id, in: guestToHost) else { return id }
        return Self.apply(entry, to: id)
    }

    /// The guest id host id `id` is shown as.
    public func toGuest(_ id: UInt32) -> UInt32 {
        guard let entry = Self.find(id, in: hostToGuest) else { return id }
        // Host-to-guest entries never forbid; keep the id if one somehow did.
        return Self.apply(entry, to: id) ?? id
    }

    static func apply(_ entry: Entry, to id: UInt32) -> UInt32? {
        switch entry.action {
        // In range by construction: init checked that the target range ends by 2^32.
        case .offset(let base): return base &+ (id &- entry.start)
        case .squash(let target): return target
        case .forbid: return nil
        }
    }

    static func find(_ id: UInt32, in entries: [Entry]) -> Entry? {
        var low = 0
        var high = entries.count
        // The last entry that starts at or before id.
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].start <= id { low = mid + 1 } else { high = mid }
        }
        guard low > 0 else { return nil }
        let entry = entries[low - 1]
        return UInt64(id) < entry.end ? entry : nil
    }
}

/// Uid and gid translation together, as the file system applies them.
public struct IDTranslations: Sendable, Equatable {
    public var uid: IDTranslation
    public var gid: IDTranslation

    public init(uid: IDTranslation, gid: IDTranslation) {
        self.uid = uid
        self.gid = gid
    }

    /// Both from command-line rule strings.
    public init(uidRules: [String], gidRules: [String]) throws(IDTranslationSetupError) {
        uid = try IDTranslation(parsing: uidRules, kind: .uid)
        gid = try IDTranslation(parsing: gidRules, kind: .gid)
    }

    /// No rules on either side.
    public var isIdentity: Bool { uid.isIdentity && gid.isIdentity }
}

/// A rule error with the option it came from: the daemon's start-up message.
public struct IDTranslationSetupError: Error, Equatable, CustomStringConvertible {
    public var option: String
    public var error: TranslationError
    public var description: String { "\(option): \(error)" }
}
