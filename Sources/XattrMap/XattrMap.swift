/// The xattr-name mapping rule engine (`-o xattrmap=RULES`). Pure: no I/O.
///
/// The passthrough backend asks it two questions:
/// - a name the guest sent (getxattr/setxattr/removexattr): which host name, or which error;
/// - a name the host listed (listxattr): which guest name, or hide it.
public struct XattrMap: Sendable {
    /// Parses a rule string; a malformed rule set is a `XattrMapError` naming the rule and position.
    public init(rules: String) throws(XattrMapError) {
        // Placeholder until the rule engine lands: accepts nothing.
        throw XattrMapError(message: "xattrmap is not implemented yet", ruleIndex: 0, position: 0)
    }

    /// Maps a client (guest) name to the host name to use.
    public func mapClientName(_ name: UnsafeBufferPointer<UInt8>) -> ClientNameMapping { .pass }

    /// Maps a host name found by listxattr to the name the guest sees.
    public func mapServerName(_ name: UnsafeBufferPointer<UInt8>) -> ServerNameMapping { .pass }
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
