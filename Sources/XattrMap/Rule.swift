extension XattrMap {
    /// One rule of a parsed rule set, after `map` has been expanded.
    ///
    /// A client name (getxattr/setxattr/removexattr) matches when it starts with `key`;
    /// a server name (listxattr) matches when it starts with `prepend`.
    public struct Rule: Equatable, Hashable, Sendable, CustomStringConvertible {
        /// What a matching name turns into.
        public enum Kind: String, Equatable, Hashable, Sendable, CaseIterable {
            /// Client names get `prepend` put in front; server names get it taken off.
            case prefix
            /// The name passes unchanged.
            case ok
            /// Client names are refused with EPERM; server names are hidden.
            case bad
            /// Client names are refused with ENOTSUP; server names are hidden.
            case unsupported
        }

        /// Which direction a rule looks at.
        public enum Scope: String, Equatable, Hashable, Sendable, CaseIterable {
            /// Names the guest sends.
            case client
            /// Names the host lists.
            case server
            /// Both.
            case all

            /// Whether the rule is consulted for names the guest sends.
            public var coversClient: Bool { self != .server }
            /// Whether the rule is consulted for names the host lists.
            public var coversServer: Bool { self != .client }
        }

        public var kind: Kind
        public var scope: Scope
        /// Prefix tested on client names (no NUL).
        public var key: [UInt8]
        /// Prefix tested on server names, and the prefix that `prefix` adds or strips (no NUL).
        public var prepend: [UInt8]

        public init(_ kind: Kind, _ scope: Scope, key: [UInt8], prepend: [UInt8]) {
            self.kind = kind; self.scope = scope; self.key = key; self.prepend = prepend
        }

        public init(_ kind: Kind, _ scope: Scope, key: String, prepend: String) {
            self.init(kind, scope, key: Array(key.utf8), prepend: Array(prepend.utf8))
        }

        /// The rule in the option syntax, with a separator that occurs in neither field,
        /// e.g. `:prefix:all:trusted.:user.virtiofs.:`; for logging the expanded rule set.
        public var description: String {
            let key = String(decoding: self.key, as: UTF8.self)
            let prepend = String(decoding: self.prepend, as: UTF8.self)
            // A separator must not occur inside a field, or the text would not parse back. Bytes, not
            // Characters: ":" followed by a combining mark is one Character but still a ":" byte.
            let candidates = Array(":/|#;!~^%@".utf8)
            let separator = candidates.first { !self.key.contains($0) && !self.prepend.contains($0) } ?? 1
            let s = String(UnicodeScalar(separator))
            return s + kind.rawValue + s + scope.rawValue + s + key + s + prepend + s
        }
    }
}
