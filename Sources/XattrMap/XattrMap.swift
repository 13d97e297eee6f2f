/// The xattr-name mapping rule engine (`-o xattrmap=RULES`). Pure: no I/O.
///
/// The passthrough backend asks it two questions:
/// - a name the guest sent (getxattr/setxattr/removexattr): which host name, or which error;
/// - a name the host listed (listxattr): which guest name, or hide it.
///
/// Rules are tried in order and the first match decides. Parsing guarantees that some rule
/// matches every client name and every server name.
public struct XattrMap: Equatable, Sendable, CustomStringConvertible {
    /// The rules in the order they are tried, with any `map` rule already expanded.
    public private(set) var rules: [Rule]

    /// Parses a rule string; a malformed rule set is a `XattrMapError` naming the rule and position.
    public init(rules: String) throws(XattrMapError) {
        self.rules = try RuleParser.parse(rules)
    }

    /// The expanded rules in the option syntax, for logging what a `map` rule turned into.
    public var description: String { rules.map(\.description).joined(separator: " ") }

    /// Maps a client (guest) name to the host name to use.
    public func mapClientName(_ name: UnsafeBufferPointer<UInt8>) -> ClientNameMapping {
        for rule in rules where rule.scope.coversClient && Self.hasPrefix(name, rule.key) {
            switch rule.kind {
            case .ok: return .pass
            case .bad: return .deny(Self.EPERM)
            case .unsupported: return .deny(Self.ENOTSUP)
            case .prefix:
                if rule.prepend.isEmpty { return .pass }
                var host = rule.prepend
                host.append(contentsOf: name)
                return .rename(host)
            }
        }
        // Unreachable after parsing (a catch-all exists); refusing is the safe answer.
        return .deny(Self.EPERM)
    }

    /// Maps a host name found by listxattr to the name the guest sees.
    public func mapServerName(_ name: UnsafeBufferPointer<UInt8>) -> ServerNameMapping {
        switch serverDecision(name) {
        case .pass: return .pass
        case .hide: return .hide
        case .strip(let count): return .rename(Array(name[count...]))
        }
    }

    /// Rewrites a host listxattr buffer (names each ended by NUL) into what the guest sees:
    /// each name renamed, passed or left out, in the host's order. `guestList` is replaced,
    /// keeping its capacity; its count is the size to report to the guest (0 if every name
    /// is hidden). The result is never longer than `hostList`, as names only lose prefixes.
    /// Empty entries are dropped; a final name without its NUL is treated as if it had one.
    public func filterListing(_ hostList: UnsafeRawBufferPointer, into guestList: inout [UInt8]) {
        guestList.removeAll(keepingCapacity: true)
        forEachListedName(hostList) { name in
            switch serverDecision(name) {
            case .hide: return
            case .pass: guestList.append(contentsOf: name)
            case .strip(let count): guestList.append(contentsOf: name[count...])
            }
            guestList.append(0)
        }
    }

    /// The size `filterListing` would produce, without building the list: for a listxattr
    /// that only asks for the size.
    public func filteredListingSize(_ hostList: UnsafeRawBufferPointer) -> Int {
        var size = 0
        forEachListedName(hostList) { name in
            switch serverDecision(name) {
            case .hide: return
            case .pass: size += name.count + 1
            case .strip(let count): size += name.count - count + 1
            }
        }
        return size
    }

    // MARK: Internals

    /// Linux errno values, fixed by the kernel ABI; hard-coded to keep this module free of Glibc.
    static let EPERM: Int32 = 1
    /// ENOTSUP is EOPNOTSUPP on Linux.
    static let ENOTSUP: Int32 = 95

    enum ServerDecision { case pass, hide, strip(Int) }

    /// The server-side answer without allocating: how many leading bytes to strip.
    func serverDecision(_ name: UnsafeBufferPointer<UInt8>) -> ServerDecision {
        for rule in rules where rule.scope.coversServer && Self.hasPrefix(name, rule.prepend) {
            switch rule.kind {
            case .ok: return .pass
            case .bad, .unsupported: return .hide
            case .prefix:
                if rule.prepend.isEmpty { return .pass }
                // A name that is only the prefix would become an empty name, which the
                // guest cannot use and which would break the NUL-separated listing.
                if rule.prepend.count == name.count { return .hide }
                return .strip(rule.prepend.count)
            }
        }
        return .hide
    }

    /// Calls `body` with each non-empty name of a NUL-separated list.
    private func forEachListedName(_ list: UnsafeRawBufferPointer,
                                   _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        list.withMemoryRebound(to: UInt8.self) { bytes in
            var start = 0
            var index = 0
            while index <= bytes.count {
                if index == bytes.count || bytes[index] == 0 {
                    if index > start {
                        body(UnsafeBufferPointer(rebasing: bytes[start..<index]))
                    }
                    start = index + 1
                }
                index += 1
            }
        }
    }

    private static func hasPrefix(_ name: UnsafeBufferPointer<UInt8>, _ prefix: [UInt8]) -> Bool {
        guard prefix.count <= name.count else { return false }
        var i = 0
        while i < prefix.count {
            if name[i] != prefix[i] { return false }
            i += 1
        }
        return true
    }
}

/// What to do with a name the guest sent.
public enum ClientNameMapping: Equatable, Sendable {
    /// Use the name unchanged.
    case pass
    /// Use this host name instead (no trailing NUL).
    case rename([UInt8])
    /// Refuse the request with this errno (EPERM for `bad`, ENOTSUP for `unsupported`).
    case deny(Int32)
}

/// What to do with a name the host listed.
public enum ServerNameMapping: Equatable, Sendable {
    case pass
    /// Show the guest this name instead (no trailing NUL).
    case rename([UInt8])
    /// Leave the name out of the listing.
    case hide
}

/// A rule-set parse error.
public struct XattrMapError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    /// 1-based index of the rule that failed.
    public var ruleIndex: Int
    /// 0-based character offset in the rule string.
    public var position: Int
    public init(message: String, ruleIndex: Int, position: Int) {
        self.message = message; self.ruleIndex = ruleIndex; self.position = position
    }
    public var description: String { "xattrmap rule \(ruleIndex) at position \(position): \(message)" }
}
