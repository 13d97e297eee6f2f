import Foundation
import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// Which daemon the integration tests drive, and a fresh shared directory for each test.
enum DaemonUnderTest {
    /// `VIRTIOFSD_BIN` if set; else our debug build if it is a working daemon; else QEMU's C virtiofsd.
    static let binary: String = {
        if let path = ProcessInfo.processInfo.environment["VIRTIOFSD_BIN"], !path.isEmpty { return path }
        let ours = packageRoot + "/.build/debug/virtiofsd"
        if FileManager.default.isExecutableFile(atPath: ours), answersCapabilities(ours) { return ours }
        return DaemonProcess.referencePath
    }()

    static var isReference: Bool { binary == DaemonProcess.referencePath }

    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// A placeholder build is not a daemon yet: only one that prints its capabilities counts.
    private static func answersCapabilities(_ path: String) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["--print-capabilities"]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return process.terminationStatus == 0 && output.contains("\"type\"")
    }
}

/// A started daemon, its shared directory and a connected frontend.
final class Rig {
    let directory: URL
    let shared: URL
    let daemon: DaemonProcess
    let frontend: VhostUserFrontend

    /// `askDaemonForQueues`: pass `--num-request-queues` (ours only) when more than one queue is wanted.
    init(requestQueues: Int = 1, askDaemonForQueues: Bool = true, options: VhostUserFrontend.Options = .init(),
         extraArguments: [String] = [], files: [String: String] = [:]) throws {
        // Both daemons set up namespaces and switch credentials: they need root.
        if geteuid() != 0 { throw XCTSkip("integration tests start a vhost-user daemon, which needs root") }
        directory = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("vufe-\(UUID().uuidString.prefix(8))")
        shared = directory.appendingPathComponent("shared")
        try FileManager.default.createDirectory(at: shared, withIntermediateDirectories: true)
        for (name, content) in files {
            try content.write(to: shared.appendingPathComponent(name), atomically: false, encoding: .utf8)
        }
        var extra = extraArguments
        if requestQueues > 1, askDaemonForQueues { extra.append("--num-request-queues=\(requestQueues)") }
        daemon = try DaemonProcess(binary: DaemonUnderTest.binary, socketPath: directory.appendingPathComponent("vhost.sock").path,
                                   sharedDirectory: shared.path, logPath: directory.appendingPathComponent("daemon.log").path,
                                   extraArguments: extra)
        frontend = try VhostUserFrontend(socketPath: daemon.socketPath, memorySize: 128 << 20,
                                         requestQueues: requestQueues, options: options)
    }

    /// Handshake plus FUSE INIT on request queue `queue`.
    func fuseClient(queue: Int = 1, slots: Int = 4) throws -> FuseClient {
        if frontend.queues.isEmpty { try frontend.handshake() }
        let client = try FuseClient(frontend: frontend, queue: queue, slots: slots)
        return client
    }

    deinit {
        frontend.close()
        daemon.stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
