/// Turns the `xattrmap=` text into rules.
///
/// The text is read as Unicode scalars so that a non-ASCII separator works and error
/// positions count characters, not UTF-8 bytes; the fields are kept as UTF-8 bytes,
/// because that is what the names they are compared with are.
struct RuleParser {
    /// A rule as written, before `map` is expanded.
    enum Written {
        case rule(XattrMap.Rule)
        case map(key: [UInt8], prepend: [UInt8])

        var isMap: Bool {
            if case .map = self { true } else { false }
        }
    }

    struct Parsed {
        var written: Written
        /// 1-based.
        var index: Int
        /// Offset of the rule's separator.
        var start: Int
    }

    private let text: [Unicode.Scalar]
    private var position = 0
    private var ruleIndex = 0

    init(_ text: String) {
        self.text = Array(text.unicodeScalars)
    }

    /// Parses, checks the place of `map`, expands it, and checks that every name is matched.
    static func parse(_ text: String) throws(XattrMapError) -> [XattrMap.Rule] {
        var parser = RuleParser(text)
        let written = try parser.parseAll()
        try parser.checkMapPlacement(written)
        let rules = expand(written)
        try parser.checkCatchAll(rules, ruleCount: written.count)
        return rules
    }

    // MARK: Syntax

    /// Space, tab, newline, vertical tab, form feed, carriage return: what may stand between rules.
    private static func isBlank(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x20, 0x09, 0x0A, 0x0B, 0x0C, 0x0D: return true
        default: return false
        }
    }

    private func error(_ message: String, at position: Int) -> XattrMapError {
        XattrMapError(message: message, ruleIndex: max(ruleIndex, 1), position: position)
    }

    private static func show(_ s: Unicode.Scalar) -> String {
        s.value < 0x20 || s.value == 0x7F ? "U+\(String(s.value, radix: 16, uppercase: true))" : "'\(s)'"
    }

    mutating func parseAll() throws(XattrMapError) -> [Parsed] {
        var parsed: [Parsed] = []
        while true {
            while position < text.count, Self.isBlank(text[position]) { position += 1 }
            guard position < text.count else { break }
            ruleIndex += 1
            let start = position
            parsed.append(Parsed(written: try parseRule(), index: ruleIndex, start: start))
        }
        if parsed.isEmpty {
            ruleIndex = 1
            throw error("expected a rule such as ':ok:all:::', found an empty rule set", at: position)
        }
        return parsed
    }

    private mutating func parseRule() throws(XattrMapError) -> Written {
        let separator = text[position]
        if separator == "\0" { throw error("expected a separator, found NUL", at: position) }
        position += 1
        let sep = Self.show(separator)

        let (typeStart, typeText) = try field(separator)
        let kind: XattrMap.Rule.Kind
        switch typeText {
        case "prefix": kind = .prefix
        case "ok": kind = .ok
        case "bad": kind = .bad
        case "unsupported": kind = .unsupported
        case "map":
            try endField(separator, "to end the type field")
            let key = try field(separator).text
            try endField(separator, "to end the key field")
            let prepend = try field(separator).text
            try endField(separator, "to end the prepend field")
            return .map(key: Array(key.utf8), prepend: Array(prepend.utf8))
        default:
            throw error("expected type prefix|ok|bad|unsupported|map, found \(quoted(typeText))",
                        at: typeStart)
        }
        try endField(separator, "to end the type field")

        let (scopeStart, scopeText) = try field(separator)
        guard let scope = XattrMap.Rule.Scope(rawValue: scopeText) else {
            throw error("expected scope client|server|all, found \(quoted(scopeText))", at: scopeStart)
        }
        try endField(separator, "to end the scope field")
        let key = try field(separator).text
        try endField(separator, "to end the key field")
        let prepend = try field(separator).text
        try endField(separator, "to end the prepend field (a rule ends with its separator: \(sep)type\(sep)scope\(sep)key\(sep)prepend\(sep))")
        return .rule(XattrMap.Rule(kind, scope, key: Array(key.utf8), prepend: Array(prepend.utf8)))
    }

    private func quoted(_ s: String) -> String {
        position >= text.count && s.isEmpty ? "end of input" : "'\(s)'"
    }

    /// Reads up to (not past) the next separator or the end of the text.
    private mutating func field(_ separator: Unicode.Scalar) throws(XattrMapError) -> (start: Int, text: String) {
        let start = position
        var scalars = String.UnicodeScalarView()
        while position < text.count, text[position] != separator {
            // Names are NUL-terminated on both sides; a NUL in a field could never match.
            if text[position] == "\0" { throw error("NUL is not allowed in a rule", at: position) }
            scalars.append(text[position])
            position += 1
        }
        return (start, String(scalars))
    }

    /// Consumes the separator that must follow a field.
    private mutating func endField(_ separator: Unicode.Scalar, _ purpose: String) throws(XattrMapError) {
        guard position < text.count else {
            throw error("expected \(Self.show(separator)) \(purpose), found end of input", at: position)
        }
        // `field` stops only at the separator or the end, so this is the separator.
        position += 1
    }

    // MARK: Meaning

    /// At most one `map`, and only as the last rule: it ends with its own catch-all,
    /// so anything after it could never match.
    func checkMapPlacement(_ parsed: [Parsed]) throws(XattrMapError) {
        guard let first = parsed.firstIndex(where: \.written.isMap) else { return }
        if let second = parsed[(first + 1)...].first(where: \.written.isMap) {
            throw XattrMapError(
                message: "expected at most one map rule, found a second one (rule \(parsed[first].index) is a map rule)",
                ruleIndex: second.index, position: second.start)
        }
        if first != parsed.count - 1 {
            let next = parsed[first + 1]
            throw XattrMapError(
                message: "expected the map rule to be the last rule, found rule \(next.index) after it",
                ruleIndex: parsed[first].index, position: next.start)
        }
    }

    /// Replaces `map` with the rules it stands for.
    static func expand(_ parsed: [Parsed]) -> [XattrMap.Rule] {
        var rules: [XattrMap.Rule] = []
        for p in parsed {
            switch p.written {
            case .rule(let rule):
                rules.append(rule)
            case .map(let key, let prepend) where key.isEmpty:
                // Every guest name is prefixed; host names without the prefix are hidden.
                rules.append(XattrMap.Rule(.prefix, .all, key: [], prepend: prepend))
                rules.append(XattrMap.Rule(.bad, .all, key: [], prepend: []))
            case .map(let key, let prepend):
                // Guest names under `key` are prefixed, and the prefix stripped in listings.
                rules.append(XattrMap.Rule(.prefix, .all, key: key, prepend: prepend))
                // Host names under `key` without the prefix belong to the host: hidden.
                rules.append(XattrMap.Rule(.bad, .server, key: [], prepend: key))
                // The guest may not reach the prefixed names directly (that would bypass
                // the guest's own access rules for `key`).
                rules.append(XattrMap.Rule(.bad, .client, key: prepend, prepend: []))
                // Everything else passes.
                rules.append(XattrMap.Rule(.ok, .all, key: [], prepend: []))
            }
        }
        return rules
    }

    /// Every client name and every server name must meet a rule, so no name is left to chance.
    func checkCatchAll(_ rules: [XattrMap.Rule], ruleCount: Int) throws(XattrMapError) {
        let clientCovered = rules.contains { $0.scope.coversClient && $0.key.isEmpty }
        let serverCovered = rules.contains { $0.scope.coversServer && $0.prepend.isEmpty }
        let side: String
        switch (clientCovered, serverCovered) {
        case (true, true): return
        case (false, true): side = "every client name (a client or all rule with an empty key)"
        case (true, false): side = "every server name (a server or all rule with an empty prepend)"
        case (false, false): side = "every name (an all rule with empty key and prepend)"
        }
        throw XattrMapError(
            message: "expected a final catch-all rule matching \(side) such as ':ok:all:::' or ':bad:all:::', found none",
            ruleIndex: ruleCount, position: text.count)
    }
}
