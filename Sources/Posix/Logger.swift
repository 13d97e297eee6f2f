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
    public let label: String

    public init(label: String = "virtiofsd", level: LogLevel = .info, destination: LogDestination = .standardError) {
        self.label = label
        self.level = Atomic(level.rawValue)
        self.destination = destination
        if destination == .syslog {
            // openlog keeps the ident pointer; this string lives for the process.
            let ident = strdup(label)
            openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON)
        }
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

    /// UTC wall-clock time with milliseconds, e.g. "2026-11-21 11:34:37.985".
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
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2)) "
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
            + pad(Int32(ts.tv_nsec / 1_000_000), 3)
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
