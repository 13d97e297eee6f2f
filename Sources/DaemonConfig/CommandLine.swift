import IDTranslation
import Options
import XattrMap

/// What the daemon should do after reading its command line.
public enum CommandLineOutcome: Sendable, Equatable {
    /// Serve with these options (already cross-checked).
    case run(DaemonOptions)
    /// Print this usage text on stdout and exit 0.
    case help(String)
    /// Print this version text on stdout and exit 0.
    case version(String)
    /// Print this vhost-user backend capability JSON on stdout and exit 0.
    case printCapabilities(String)
}

/// Reads the daemon's arguments (without argv[0]) in either syntax:
/// QEMU's C virtiofsd (`-o source=DIR,cache=auto`, `-d`, `-f`) and the newer long options
/// (`--shared-dir DIR --cache auto`). Both may be mixed; for an option given twice the last wins.
///
/// Precedence: `--print-capabilities` anywhere wins over everything, even invalid options
/// (management tools probe with it); then `-h`/`--help`, then `-V`/`--version`. Otherwise the
/// first bad argument is the error, and after all arguments are read the cross-option checks
/// run in this order: conflicting options, no socket, no shared directory.
public func parseCommandLine(_ arguments: [String]) -> Result<CommandLineOutcome, OptionError> {
    if arguments.contains("--print-capabilities") {
        return .success(.printCapabilities(capabilitiesJSON))
    }
    if arguments.contains("-h") || arguments.contains("--help") {
        return .success(.help(usageText))
    }
    if arguments.contains("-V") || arguments.contains("--version") {
        return .success(.version(versionText))
    }
    var parser = ArgumentParser(arguments)
    do throws(OptionError) {
        let options = try parser.parse()
        try crossCheck(options)
        return .success(.run(options))
    } catch {
        return .failure(error)
    }
}

// MARK: - The option tables

/// How an option consumes its value. A handler for a value returns nil when it took the value,
/// or a short description of what was expected ("expected one of ...").
enum OptionKind: Sendable {
    case flag(@Sendable (inout DaemonOptions) -> Void)
    case value(@Sendable (inout DaemonOptions, String) -> String?)
    /// A flag that may carry a value, only with `=` (`--inode-file-handles[=MODE]`).
    case optionalValue(bare: @Sendable (inout DaemonOptions) -> Void,
                       value: @Sendable (inout DaemonOptions, String) -> String?)
}

/// Long options, written `--name`, `--name=VALUE` or `--name VALUE`.
let longOptions: [String: OptionKind] = [
    // Handled before parsing (see parseCommandLine); listed so they are not "unknown" with a value.
    "help": .flag { _ in },
    "version": .flag { _ in },
    "print-capabilities": .flag { _ in },

    "shared-dir": .value { o, v in o.sharedDir = v; return nil },
    "tag": .value { o, v in
        // The virtio-fs config space holds 36 bytes of tag.
        guard v.utf8.count <= 36 else { return "a tag is at most 36 bytes" }
        o.tag = v
        return nil
    },
    "socket-path": .value { o, v in o.socketPath = v; return nil },
    // The Rust daemon's older name of --socket-path.
    "socket": .value { o, v in o.socketPath = v; return nil },
    "socket-group": .value { o, v in o.socketGroup = v; return nil },
    "fd": .value { o, v in
        guard let n = parseNumber(v, max: UInt64(Int32.max)) else {
            return "expected a file descriptor number"
        }
        o.fd = Int32(n)
        return nil
    },
    "thread-pool-size": .value(setThreadPoolSize),
    "num-request-queues": .value { o, v in
        guard let n = parseNumber(v, max: 16), n >= 1 else { return "expected a number from 1 to 16" }
        o.numRequestQueues = Int(n)
        return nil
    },
    "fuse-mount": .value { o, v in o.fuseMount = v; return nil },

    "cache": .value(setCache),
    "allow-mmap": .flag { $0.allowMmap = true },
    "no-readdirplus": .flag { $0.readdirplus = false },
    "writeback": .flag { $0.writeback = true },
    "allow-direct-io": .flag { $0.allowDirectIO = true },

    "xattr": .flag { $0.xattr = true },
    "posix-acl": .flag { $0.posixACL = true },
    "security-label": .flag { $0.securityLabel = true },
    "xattrmap": .value(setXattrMap),

    "announce-submounts": .flag { $0.announceSubmounts = true },
    "no-announce-submounts": .flag { $0.announceSubmounts = false },
    "killpriv-v2": .flag { $0.killprivV2 = true },
    "no-killpriv-v2": .flag { $0.killprivV2 = false },
    "inode-file-handles": .optionalValue(
        bare: { $0.inodeFileHandles = .prefer },
        value: { o, v in
            let table = InodeFileHandlesMode.spellings
            guard let mode = choose(v, table) else { return expectedOneOf(table) }
            o.inodeFileHandles = mode
            return nil
        }),
    "readonly": .flag { $0.readOnly = true },
    "preserve-noatime": .flag { $0.preserveNoatime = true },
    "migration-mode": .value { o, v in
        let table = MigrationMode.allCases.map { ($0.rawValue, $0) }
        guard let mode = choose(v, table) else { return expectedOneOf(table) }
        o.migration.mode = mode
        return nil
    },
    "migration-on-error": .value { o, v in
        let table = MigrationErrorPolicy.allCases.map { ($0.rawValue, $0) }
        guard let policy = choose(v, table) else { return expectedOneOf(table) }
        o.migration.onError = policy
        return nil
    },
    "migration-verify-handles": .flag { $0.migration.verifyHandles = true },
    "migration-confirm-paths": .flag { $0.migration.confirmPaths = true },

    "sandbox": .value(setSandbox),
    "seccomp": .value { o, v in
        let table = SeccompAction.allCases.map { ($0.rawValue, $0) }
        guard let action = choose(v, table) else { return expectedOneOf(table) }
        o.seccomp = action
        return nil
    },
    "modcaps": .value(setModcaps),
    "rlimit-nofile": .value { o, v in
        guard let n = parseNumber(v, max: UInt64.max) else { return "expected a whole number" }
        o.rlimitNofile = n
        return nil
    },
    "uid-map": .value(addUIDMap),
    "gid-map": .value(addGIDMap),
    "translate-uid": .value(addUIDTranslation),
    "translate-gid": .value(addGIDTranslation),

    "log-level": .value(setLogLevel),
    "syslog": .flag { $0.syslog = true },
    // The C daemon's way to go to the background once the socket listens.
    "daemonize": .flag { $0.daemonize = true },
    "stats": .value { o, v in o.statsPath = v; return nil },
]

/// QEMU-style `-o name` / `-o name=VALUE` entries.
let subOptions: [String: OptionKind] = [
    "debug": .flag { $0.logLevel = .debug },
    "source": .value { o, v in o.sharedDir = v; return nil },
    "cache": .value(setCache),
    "flock": .flag { $0.flock = true },
    "no_flock": .flag { $0.flock = false },
    "posix_lock": .flag { $0.posixLocks = true },
    "no_posix_lock": .flag { $0.posixLocks = false },
    "log_level": .value(setLogLevel),
    "loglevel": .value(setLogLevel),
    "modcaps": .value(setModcaps),
    // The C daemon's switch off a racy fallback it no longer has; accepted for old scripts.
    "norace": .flag { _ in },
    // libfuse options the C daemon took; they mean nothing for a vhost-user device.
    "allow_root": .flag { $0.warnings.append(noEffect("-o allow_root", "the guest kernel decides who may use the mount")) },
    "max_idle_threads": .value { o, v in
        guard parseNumber(v, max: UInt64(Int32.max)) != nil else { return "expected a whole number" }
        o.warnings.append(noEffect("-o max_idle_threads", "queue threads are never idle-reaped; see --thread-pool-size"))
        return nil
    },
    "readdirplus": .flag { $0.readdirplus = true },
    "no_readdirplus": .flag { $0.readdirplus = false },
    "sandbox": .value(setSandbox),
    "timeout": .value { o, v in
        guard let seconds = parseSeconds(v) else { return "expected a number of seconds, 0 or more" }
        o.timeout = seconds
        return nil
    },
    "writeback": .flag { $0.writeback = true },
    "no_writeback": .flag { $0.writeback = false },
    "xattr": .flag { $0.xattr = true },
    "no_xattr": .flag { $0.xattr = false },
    "posix_acl": .flag { $0.posixACL = true },
    "no_posix_acl": .flag { $0.posixACL = false },
    "xattrmap": .value(setXattrMap),
    "announce_submounts": .flag { $0.announceSubmounts = true },
    "killpriv_v2": .flag { $0.killprivV2 = true },
    "no_killpriv_v2": .flag { $0.killprivV2 = false },
    "allow_direct_io": .flag { $0.allowDirectIO = true },
    "no_allow_direct_io": .flag { $0.allowDirectIO = false },
    "security_label": .flag { $0.securityLabel = true },
    "no_security_label": .flag { $0.securityLabel = false },
    // Not in QEMU's C daemon: the identity options in this syntax too, each may repeat.
    "uid_map": .value(addUIDMap),
    "gid_map": .value(addGIDMap),
    "translate_uid": .value(addUIDTranslation),
    "translate_gid": .value(addGIDTranslation),
]

// MARK: - Value handlers shared by both syntaxes

func noEffect(_ spelling: String, _ why: String) -> String {
    "'\(spelling)' is accepted for compatibility and has no effect: \(why)"
}

@Sendable func setCache(_ o: inout DaemonOptions, _ v: String) -> String? {
    guard let mode = CacheMode(option: v) else { return expectedOneOf(CacheMode.spellings) }
    o.cache = mode
    return nil
}

@Sendable func setSandbox(_ o: inout DaemonOptions, _ v: String) -> String? {
    let table = SandboxMode.allCases.map { ($0.rawValue, $0) }
    guard let mode = choose(v, table) else { return expectedOneOf(table) }
    o.sandbox = mode
    return nil
}

@Sendable func setLogLevel(_ o: inout DaemonOptions, _ v: String) -> String? {
    let table = LogLevel.spellings
    guard let level = choose(v, table) else { return expectedOneOf(table) }
    o.logLevel = level
    return nil
}

@Sendable func setThreadPoolSize(_ o: inout DaemonOptions, _ v: String) -> String? {
    // A bound keeps a typo from asking for millions of threads.
    guard let n = parseNumber(v, max: 1024) else { return "expected a number from 0 to 1024" }
    o.threadPoolSize = Int(n)
    return nil
}

/// The rules are parsed here, so a bad map is an option error like any other.
@Sendable func setXattrMap(_ o: inout DaemonOptions, _ v: String) -> String? {
    do throws(XattrMapError) {
        o.xattrMap = try XattrMap(rules: v)
        return nil
    } catch {
        return error.description
    }
}

@Sendable func addUIDMap(_ o: inout DaemonOptions, _ v: String) -> String? {
    do throws(IDMapError) { o.uidMap.append(try IDMap(parsing: v)); return nil } catch { return error.reason }
}

@Sendable func addGIDMap(_ o: inout DaemonOptions, _ v: String) -> String? {
    do throws(IDMapError) { o.gidMap.append(try IDMap(parsing: v)); return nil } catch { return error.reason }
}

@Sendable func addUIDTranslation(_ o: inout DaemonOptions, _ v: String) -> String? {
    addTranslation(&o, v, uid: true)
}

@Sendable func addGIDTranslation(_ o: inout DaemonOptions, _ v: String) -> String? {
    addTranslation(&o, v, uid: false)
}

/// Each rule is parsed, and the table rebuilt, as it comes: a malformed rule, or one that
/// overlaps an earlier one, is an option error naming that rule.
func addTranslation(_ o: inout DaemonOptions, _ v: String, uid: Bool) -> String? {
    do throws(TranslationError) {
        let rule = try TranslationRule(parsing: v)
        let uidRules = uid ? o.translateUID + [rule] : o.translateUID
        let gidRules = uid ? o.translateGID : o.translateGID + [rule]
        o.idTranslation = IDTranslations(uid: try IDTranslation(rules: uidRules), gid: try IDTranslation(rules: gidRules))
        o.translateUID = uidRules
        o.translateGID = gidRules
        return nil
    } catch {
        return error.description
    }
}

@Sendable func setModcaps(_ o: inout DaemonOptions, _ v: String) -> String? {
    guard let changes = CapabilityChange.parseList(v) else {
        return "expected a colon-separated list of +name or -name, e.g. +sys_admin:-chown"
    }
    o.modcaps = changes
    return nil
}

// MARK: - Value syntax

func choose<T>(_ value: String, _ table: [(String, T)]) -> T? {
    table.first { $0.0 == value }?.1
}

func expectedOneOf<T>(_ table: [(String, T)]) -> String {
    "expected one of " + table.map { $0.0 }.joined(separator: ", ")
}

/// Decimal digits only (no sign, no spaces), at most `max`; nil otherwise, never a trap.
func parseNumber(_ text: String, max: UInt64) -> UInt64? {
    guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
    guard let n = UInt64(text), n <= max else { return nil }
    return n
}

/// Non-negative, finite seconds written as digits with an optional fraction ("0.5", "3", "2.").
func parseSeconds(_ text: String) -> Double? {
    var digits = 0
    var dots = 0
    for byte in text.utf8 {
        if byte >= 0x30 && byte <= 0x39 { digits += 1 }
        else if byte == 0x2E { dots += 1 }
        else { return nil }
    }
    guard digits > 0, dots <= 1, let seconds = Double(text), seconds.isFinite else { return nil }
    return seconds
}

/// Splits a `-o` list at commas; two commas stand for one comma inside a value
/// (libvirt writes `source=/a,,b` for the path "/a,b"). Empty entries are skipped.
func splitSubOptions(_ list: String) -> [String] {
    var entries: [String] = []
    var current = String.UnicodeScalarView()
    let scalars = Array(list.unicodeScalars)
    var i = 0
    while i < scalars.count {
        let c = scalars[i]
        if c == "," {
            if i + 1 < scalars.count && scalars[i + 1] == "," {
                current.append(",")
                i += 2
                continue
            }
            entries.append(String(current))
            current = String.UnicodeScalarView()
        } else {
            current.append(c)
        }
        i += 1
    }
    entries.append(String(current))
    return entries.filter { !$0.isEmpty }
}

// MARK: - The walk over the arguments

struct ArgumentParser {
    let arguments: [String]
    var index = 0
    var options = DaemonOptions()

    init(_ arguments: [String]) { self.arguments = arguments }

    mutating func parse() throws(OptionError) -> DaemonOptions {
        while index < arguments.count {
            let arg = arguments[index]
            index += 1
            if arg.hasPrefix("--") {
                try parseLong(arg)
            } else if arg == "-o" {
                guard let list = nextValue() else { throw .missingValue("-o") }
                try parseSubOptionList(list)
            } else if arg.hasPrefix("-o") {
                try parseSubOptionList(String(arg.dropFirst(2)))
            } else if arg == "-d" {
                options.logLevel = .debug
            } else if arg == "-f" {
                // Foreground is the default; -f says so explicitly (--daemonize forks).
            } else if arg.hasPrefix("-") {
                throw .unknownOption(arg, suggestion: suggest(arg))
            } else if let previous = optionalValueOption(before: index - 1) {
                throw OptionError(option: previous, message:
                    "unexpected argument '\(arg)': '\(previous)' takes its value only after '=': write '\(previous)=\(arg)'")
            } else {
                throw OptionError(option: arg, message: "unexpected argument '\(arg)'")
            }
        }
        return options
    }

    /// The option at `position` when it is one whose value may only follow '=' and it was
    /// given bare (`--inode-file-handles prefer`).
    func optionalValueOption(before position: Int) -> String? {
        guard position > 0 else { return nil }
        let previous = arguments[position - 1]
        guard previous.hasPrefix("--"), !previous.contains("="),
              case .optionalValue? = longOptions[String(previous.dropFirst(2))] else { return nil }
        return previous
    }

    /// The next argument as a separate value, unless it is missing or looks like an option.
    mutating func nextValue() -> String? {
        guard index < arguments.count else { return nil }
        let candidate = arguments[index]
        guard !candidate.hasPrefix("-") else { return nil }
        index += 1
        return candidate
    }

    mutating func parseLong(_ arg: String) throws(OptionError) {
        let body = arg.dropFirst(2)
        let name: String
        let inline: String?
        if let eq = body.firstIndex(of: "=") {
            name = String(body[..<eq])
            inline = String(body[body.index(after: eq)...])
        } else {
            name = String(body)
            inline = nil
        }
        let spelling = "--" + name
        guard let kind = longOptions[name] else {
            throw .unknownOption(spelling, suggestion: closest(name, among: longOptions.keys).map { "--" + $0 })
        }
        switch kind {
        case .flag(let apply):
            guard inline == nil else { throw .unexpectedValue(spelling) }
            apply(&options)
        case .value(let apply):
            guard let value = inline ?? nextValue() else { throw .missingValue(spelling) }
            try take(value, spelling, apply)
        case .optionalValue(let bare, let apply):
            if let inline {
                try take(inline, spelling, apply)
            } else {
                bare(&options)
            }
        }
    }

    mutating func parseSubOptionList(_ list: String) throws(OptionError) {
        let entries = splitSubOptions(list)
        guard !entries.isEmpty else { throw .missingValue("-o") }
        for entry in entries {
            let name: String
            let value: String?
            if let eq = entry.firstIndex(of: "=") {
                name = String(entry[..<eq])
                value = String(entry[entry.index(after: eq)...])
            } else {
                name = entry
                value = nil
            }
            let spelling = "-o " + name
            guard let kind = subOptions[name] else {
                throw .unknownOption(spelling, suggestion: closest(name, among: subOptions.keys).map { "-o " + $0 })
            }
            switch kind {
            case .flag(let apply):
                guard value == nil else { throw .unexpectedValue(spelling) }
                apply(&options)
            case .value(let apply), .optionalValue(_, let apply):
                guard let value else { throw .missingValue(spelling) }
                try take(value, spelling, apply)
            }
        }
    }

    mutating func take(_ value: String, _ spelling: String,
                       _ apply: (inout DaemonOptions, String) -> String?) throws(OptionError) {
        guard !value.isEmpty else { throw .missingValue(spelling) }
        if let expected = apply(&options, value) {
            throw .invalidValue(spelling, value, expected: expected)
        }
    }
}

// MARK: - Suggestions for misspelt options

/// A near spelling of an unknown single-dash option (`-shared-dir` for `--shared-dir`).
func suggest(_ arg: String) -> String? {
    let name = arg.drop { $0 == "-" }
    guard name.count > 1 else { return nil }
    return closest(String(name.prefix { $0 != "=" }), among: longOptions.keys).map { "--" + $0 }
}

/// The known name nearest to `name`, if it is close: at most one edit for short names,
/// two for longer ones (an edit is an insertion, deletion, substitution or swap of
/// neighbours, so `cahce` is one edit from `cache`).
func closest<Names: Sequence<String>>(_ name: String, among names: Names) -> String? {
    let limit = name.count <= 4 ? 1 : 2
    var best: (name: String, distance: Int)? = nil
    for candidate in names.sorted() {
        let d = editDistance(Array(name.utf8), Array(candidate.utf8))
        if d <= limit, d < (best?.distance ?? Int.max) { best = (candidate, d) }
    }
    return best?.name
}

/// Optimal string alignment distance (Levenshtein plus swaps of adjacent bytes).
func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
    for i in 0...a.count { table[i][0] = i }
    for j in 0...b.count { table[0][j] = j }
    for i in 1...a.count {
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            var d = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
            if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] { d = min(d, table[i - 2][j - 2] + 1) }
            table[i][j] = d
        }
    }
    return table[a.count][b.count]
}

// MARK: - Checks across options

func crossCheck(_ o: DaemonOptions) throws(OptionError) {
    if o.fd != nil && o.socketPath != nil { throw .conflict("--fd", "--socket-path") }
    if o.fuseMount != nil {
        if o.fd != nil { throw .conflict("--fuse-mount", "--fd") }
        if o.socketPath != nil { throw .conflict("--fuse-mount", "--socket-path") }
    }
    if o.socketGroup != nil && o.socketPath == nil {
        if o.fd != nil { throw .conflict("--socket-group", "--fd") }
        if o.fuseMount != nil { throw .conflict("--socket-group", "--fuse-mount") }
    }
    if o.endpoint == nil { throw .missingEndpoint }
    if o.sharedDir == nil { throw .missingSharedDir }
}
