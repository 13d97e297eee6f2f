#if canImport(Glibc)
import Glibc
#endif
import Posix

/// A vhost-user daemon started for one frontend: ours or QEMU's C virtiofsd.
/// Its output goes to a log file; `stop()` reaps it and says how it ended.
public final class DaemonProcess {
    public static let referencePath = "/usr/lib/qemu/virtiofsd"

    public let binary: String
    public let socketPath: String
    public let logPath: String
    public let pid: pid_t
    public private(set) var exit: ProcessExit?

    /// Starts `binary --socket-path=<socketPath> -o source=<sharedDirectory> -o cache=auto <extra>`
    /// (the option forms both daemons accept) and waits until the socket accepts a connection.
    public init(binary: String, socketPath: String, sharedDirectory: String, logPath: String,
                extraArguments: [String] = [], startTimeoutMilliseconds: Int = 10_000) throws(FrontendError) {
        self.binary = binary
        self.socketPath = socketPath
        self.logPath = logPath
        try? Sys.unlink(socketPath)
        let arguments = ["--socket-path=\(socketPath)", "-o", "source=\(sharedDirectory)", "-o", "cache=auto"] + extraArguments
        pid = try attempt("start \(binary)") { () throws(Errno) in
            try Sys.spawnProcess(binary, arguments: arguments, outputPath: logPath)
        }
        // The socket file appears at bind(); waiting for it avoids stealing the one connection.
        let deadline = Sys.monotonicNanoseconds() + UInt64(startTimeoutMilliseconds) * 1_000_000
        while (try? Sys.statPath(socketPath)).map({ $0.st_mode & S_IFMT == S_IFSOCK }) != true {
            if let status = try? Sys.waitProcess(pid, block: false) {
                exit = ProcessExit(waitStatus: status)
                throw .daemonFailed("\(binary) \(ProcessExit(waitStatus: status)) before listening: \(logTail())")
            }
            if Sys.monotonicNanoseconds() > deadline {
                _ = stop()
                throw .timedOut("\(binary) to create \(socketPath)")
            }
            Sys.sleep(nanoseconds: 5_000_000)
        }
    }

    deinit { _ = stop() }

    /// Whether the process is still running (reaps it if it has ended).
    public var isRunning: Bool {
        if exit != nil { return false }
        if let status = try? Sys.waitProcess(pid, block: false) {
            exit = ProcessExit(waitStatus: status)
            return false
        }
        return true
    }

    /// Waits up to `timeoutMilliseconds` for the daemon to end by itself; nil if it is still running.
    public func waitForExit(timeoutMilliseconds: Int) -> ProcessExit? {
        let deadline = Sys.monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while isRunning {
            if Sys.monotonicNanoseconds() > deadline { return nil }
            Sys.sleep(nanoseconds: 5_000_000)
        }
        return exit
    }

    /// Ends the daemon: waits briefly for a clean exit, then SIGTERM, then SIGKILL. Removes the socket.
    @discardableResult
    public func stop() -> ProcessExit? {
        defer { try? Sys.unlink(socketPath) }
        if let e = waitForExit(timeoutMilliseconds: 0) { return e }
        try? Sys.signalProcess(pid, SIGTERM)
        if let e = waitForExit(timeoutMilliseconds: 2000) { return e }
        try? Sys.signalProcess(pid, SIGKILL)
        if let status = try? Sys.waitProcess(pid, block: true) { exit = ProcessExit(waitStatus: status) }
        return exit
    }

    /// The daemon's output so far.
    public func log() -> String {
        guard let fd = try? Sys.openat(AT_FDCWD, logPath, O_RDONLY | O_CLOEXEC) else { return "" }
        defer { Sys.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { (try? Sys.read(fd, $0)) ?? 0 }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The last few lines of output, for error messages.
    public func logTail(lines: Int = 5) -> String {
        log().split(separator: "\n").suffix(lines).joined(separator: " | ")
    }
}
