import Foundation
import XCTest

/// Our daemon serving a share through a host FUSE mount (`--fuse-mount`), started as a
/// separate process the way an administrator would, and stopped with SIGTERM.
final class HostMountDaemon {
    let root: URL
    let share: String
    let plain: String
    let mountpoint: String
    let logPath: String
    let process = Process()
    private(set) var stopped = false
    private let usesWrapper: Bool

    /// Our build (or `VIRTIOFSD_BIN`); the reference daemon has no host-mount mode.
    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["VIRTIOFSD_BIN"], !path.isEmpty { return path }
        return DaemonUnderTest.packageRoot + "/.build/debug/virtiofsd"
    }

    /// Skips unless root, /dev/fuse and the daemon binary are there.
    static func requireHostMount() throws {
        try XCTSkipUnless(geteuid() == 0, "a host FUSE mount for other users needs root")
        try XCTSkipUnless(access("/dev/fuse", R_OK | W_OK) == 0, "no /dev/fuse")
        try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary), "no daemon at \(binary)")
    }

    /// Makes `<tmp>/{share,plain,mnt}` (searchable by everyone, so uid 1000 can be tested),
    /// lets `prepare` fill the share before start, then starts the daemon and waits for the mount.
    /// `wrapper` runs the daemon under another program (strace).
    init(arguments: [String], wrapper: [String] = [], prepare: (String) throws -> Void = { _ in }) throws {
        try HostMountDaemon.requireHostMount()
        root = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("hostmount-\(UUID().uuidString.prefix(8))")
        share = root.appendingPathComponent("share").path
        plain = root.appendingPathComponent("plain").path
        mountpoint = root.appendingPathComponent("mnt").path
        logPath = root.appendingPathComponent("daemon.log").path
        for path in [root.path, share, plain, mountpoint] {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            chmod(path, 0o755)
        }
        try prepare(share)
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        usesWrapper = !wrapper.isEmpty
        // The default sandbox (namespace), as in production, unless `arguments` say otherwise.
        let daemonArguments = ["--fuse-mount=\(mountpoint)", "--shared-dir=\(share)"] + arguments
        if wrapper.isEmpty {
            process.executableURL = URL(fileURLWithPath: HostMountDaemon.binary)
            process.arguments = daemonArguments
        } else {
            process.executableURL = URL(fileURLWithPath: wrapper[0])
            process.arguments = Array(wrapper.dropFirst()) + [HostMountDaemon.binary] + daemonArguments
        }
        let logHandle = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = logHandle
        process.standardError = logHandle
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while !HostMountDaemon.isMounted(mountpoint) {
            if !process.isRunning {
                throw NSError(domain: "HostMount", code: 2, userInfo: [
                    NSLocalizedDescriptionKey: "daemon exited (\(process.terminationStatus)) before mounting: \(log())"])
            }
            if Date() > deadline {
                process.terminate()
                throw NSError(domain: "HostMount", code: 1, userInfo: [NSLocalizedDescriptionKey: "no mount after 20 s: \(log())"])
            }
            usleep(20_000)
        }
    }

    /// Whether `path` is a mount point, from /proc/self/mountinfo (field 5).
    static func isMounted(_ path: String) -> Bool {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return false }
        return text.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 4 && fields[4] == path
        }
    }

    /// Waits up to `seconds` for `path` to stop being a mount point: the unmount is done
    /// by libfuse's auto_unmount helper after the daemon has exited, not by the daemon.
    static func waitUntilUnmounted(_ path: String, seconds: Double = 10) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while isMounted(path) && Date() < deadline { usleep(20_000) }
        return !isMounted(path)
    }

    private func childPID(of pid: pid_t) -> pid_t? {
        HostMountDaemon.children(of: pid).first
    }

    static func children(of pid: pid_t) -> [pid_t] {
        let path = "/proc/\(pid)/task/\(pid)/children"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: " ").compactMap { pid_t($0) }
    }

    /// The process that serves requests: in namespace mode the daemon's forked child
    /// (its other child is libfuse's unmount helper, fusermount3), otherwise the daemon.
    func servingPID() -> pid_t {
        let pid = process.processIdentifier
        let own = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")
        for child in HostMountDaemon.children(of: pid) {
            if (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(child)/exe")) == own { return child }
        }
        return pid
    }

    func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM, then waits; returns the exit status (nil if it had to be killed).
    @discardableResult
    func stop() -> Int32? {
        guard !stopped else { return process.terminationStatus }
        stopped = true
        if process.isRunning {
            // Under a wrapper (strace) the signal goes to the daemon, the wrapper's child;
            // strace then exits with the daemon's status.
            if usesWrapper, let child = childPID(of: process.processIdentifier) {
                kill(child, SIGTERM)
            } else {
                process.terminate()
            }
        }
        let deadline = Date().addingTimeInterval(20)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        return process.terminationReason == .exit ? process.terminationStatus : 128 + process.terminationStatus
    }

    deinit {
        stop()
        if HostMountDaemon.isMounted(mountpoint) { _ = umount2(mountpoint, Int32(MNT_DETACH)) }
        try? FileManager.default.removeItem(at: root)
    }
}

/// Runs a program; returns its status and combined output. A program still running after
/// `timeout` seconds is killed (SIGKILL), so a hung mount fails the test instead of blocking it.
@discardableResult
func runProgram(_ path: String, _ arguments: [String], environment: [String: String] = [:],
                timeout: TimeInterval = 120) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (key, value) in environment { env[key] = value }
    process.environment = env
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let pid = process.processIdentifier
    let watchdog = DispatchWorkItem { kill(pid, SIGKILL) }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
    defer { watchdog.cancel() }
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The path of a program on PATH, or nil.
func programPath(_ name: String) -> String? {
    for directory in ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"] {
        let path = directory + "/" + name
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}
