#if canImport(Glibc)
import Glibc
#endif
import Options
import Synchronization

extension LogLevel {
    var syslogPriority: Int32 {
        switch self {
        case .off, .error: return LOG_ERR
        case .warning: return LOG_WARNING
        case .info: return LOG_INFO
        case .debug, .trace: return LOG_DEBUG
        }
    }
}

/// Where log lines go.
public enum LogDestination: Sendable {
    case standardError
    case syslog
    case discard
}

/// The daemon's logger. Libraries take one, never make one.
/// Messages are autoclosures: a disabled level costs one atomic load.
/// Thread-safe: the level is atomic and each line is written with a single write(2).
public final class Logger: Sendable {
    private let level: Atomic<Int32>
    public let destination: LogDestination
    /// The name in each standard-error line, e.g. "virtiofsd" or "virtiofsd myfs".
    public let label: String

    /// `syslogIdent` names the lines in syslog (default: `label`); the daemon passes
    /// "virtiofsd[PID]" (or "virtiofsd-TAG[PID]") with the host pid it was started as,
    /// since the serving process is PID 1 of its own pid namespace and LOG_PID would
    /// make every daemon "virtiofsd[1]".
    public init(label: String = "virtiofsd", level: LogLevel = .info, destination: LogDestination = .standardError,
                syslogIdent: String? = nil) {
        self.label = label
        self.level = Atomic(level.rawValue)
        self.destination = destination
        if destination == .syslog {
            // openlog keeps the ident pointer; this string lives for the process. LOG_NDELAY
            // connects now, while /dev/log can still be reached (the sandbox hides it).
            let ident = strdup(syslogIdent ?? label)
            openlog(ident, (syslogIdent == nil ? LOG_PID : 0) | LOG_NDELAY, LOG_DAEMON)
        }
    }

    /// Names later syslog lines `ident` (after a fork changed the pid).
    public func renameSyslogIdent(_ ident: String) {
        guard destination == .syslog else { return }
        closelog()
        openlog(strdup(ident), LOG_NDELAY, LOG_DAEMON)
    }

    /// Whether `path` (the syslog socket, /dev/log) is missing: syslog(3) then drops
    /// every line without a word, so the daemon says so on standard error.
    public static func syslogSocketMissing(_ path: String = "/dev/log") -> Bool {
        var st = stat()
        return stat(path, &st) != 0 || (st.st_mode & S_IFMT) != S_IFSOCK
    }

    /// A logger that drops everything (tests).
    public static let discarding = Logger(level: .off, destination: .discard)

    public var logLevel: LogLevel {
        get { LogLevel(rawValue: level.load(ordering: .relaxed)) ?? .info }
    }

    public func setLevel(_ newLevel: LogLevel) {
        level.store(newLevel.rawValue, ordering: .relaxed)
    }

    @inlinable
    public func isEnabled(_ l: LogLevel) -> Bool {
        l != .off && l.rawValue <= logLevel.rawValue
    }

    public func log(_ l: LogLevel, _ message: @autoclosure () -> String) {
        guard isEnabled(l) else { return }
        emit(l, message())
    }

    public func error(_ message: @autoclosure () -> String) { log(.error, message()) }
    public func warning(_ message: @autoclosure () -> String) { log(.warning, message()) }
    public func info(_ message: @autoclosure () -> String) { log(.info, message()) }
    public func debug(_ message: @autoclosure () -> String) { log(.debug, message()) }
    public func trace(_ message: @autoclosure () -> String) { log(.trace, message()) }

    /// UTC wall-clock time with milliseconds and the zone, RFC 3339: "2026-11-21T11:34:37.985Z".
    /// UTC because the sandbox hides the host's zone files.
    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var seconds = ts.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ v: Int32, _ width: Int) -> String {
            let digits = String(v)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
            + pad(Int32(ts.tv_nsec / 1_000_000), 3) + "Z"
    }

    private func emit(_ l: LogLevel, _ message: String) {
        switch destination {
        case .discard:
            return
        case .syslog:
            message.withCString { text in
                withVaList([text]) { vsyslog(l.syslogPriority, "%s", $0) }
            }
        case .standardError:
            var line = "[\(Self.timestamp())] [\(label)] [\(l.label)] \(message)\n"
            line.withUTF8 { bytes in
                _ = Glibc.write(2, bytes.baseAddress, bytes.count)
            }
        }
    }
}
