import Foundation
import XCTest
import Posix
import VhostUserFrontend

/// SIGTERM to the process that was started (what libvirt and systemd send) ends the
/// daemon with status 0 within 2 s, connected or not.
///
/// The socket file the daemon created is removed when it ends: by the namespace parent
/// (after pivot_root the serving process cannot reach the path), or by the daemon itself
/// without a sandbox. In chroot mode it stays (outside the chroot); a later daemon on the
/// same path replaces a stale socket file.
final class DaemonSignalTests: XCTestCase {
    private func startWaiting(_ extra: [String], scratch: Scratch) throws -> SpawnedDaemon {
        let daemon = try SpawnedDaemon(["--socket-path=\(scratch.socketPath)", "-o", "source=\(scratch.shared.path)"] + extra,
                                       in: scratch.directory)
        XCTAssertTrue(daemon.waitForSocket(scratch.socketPath), daemon.standardError)
        return daemon
    }

    /// Sends SIGTERM and expects exit status 0 within 2 s.
    private func terminate(_ daemon: SpawnedDaemon, file: StaticString = #filePath, line: UInt = #line) {
        kill(daemon.pid, SIGTERM)
        let exit = daemon.waitForExit(milliseconds: 2000)
        XCTAssertEqual(exit, .exited(0), "after SIGTERM: \(daemon.standardError)", file: file, line: line)
    }

    private func assertSocketEnded(_ path: String, mode: String, file: StaticString = #filePath, line: UInt = #line) {
        var st = stat()
        if mode == "chroot" {
            XCTAssertEqual(lstat(path, &st), 0, "chroot: the socket file is out of reach and stays", file: file, line: line)
        } else {
            XCTAssertNotEqual(lstat(path, &st), 0, "\(mode): the socket file is removed", file: file, line: line)
        }
        XCTAssertThrowsError(try VhostUserFrontend(socketPath: path, memorySize: 1 << 20),
                             "nobody listens on it any more", file: file, line: line)
    }

    func testSigtermWhileWaitingForAFrontendExitsZero() throws {
        for mode in ["namespace", "chroot", "none"] {
            let scratch = try Scratch()
            let daemon = try startWaiting(["--sandbox=\(mode)"], scratch: scratch)
            // Namespace mode: give the parent time to fork the child it forwards signals to.
            if mode == "namespace" { XCTAssertNotNil(daemon.servingPID(namespaceMode: true)) }
            terminate(daemon)
            assertSocketEnded(scratch.socketPath, mode: mode)
        }
    }

    func testSigtermWhileAFrontendIsConnectedExitsZeroAndClosesTheConnection() throws {
        for mode in ["namespace", "chroot"] {
            let scratch = try Scratch(files: ["f": "x"])
            let daemon = try startWaiting(["--sandbox=\(mode)"], scratch: scratch)
            let (frontend, fuse) = try connectAndInitialize(scratch.socketPath)
            XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 1)
            terminate(daemon)
            XCTAssertTrue(frontend.waitForDisconnect(timeoutMilliseconds: 1000))
            assertSocketEnded(scratch.socketPath, mode: mode)
        }
    }

    func testSigtermToTheServingChildAloneAlsoEndsTheParentWithZero() throws {
        // An operator may signal the serving process they found with pgrep.
        let scratch = try Scratch()
        let daemon = try startWaiting([], scratch: scratch)
        guard let child = daemon.servingPID(namespaceMode: true) else { return XCTFail("no serving child") }
        kill(child, SIGTERM)
        XCTAssertEqual(daemon.waitForExit(milliseconds: 2000), .exited(0), daemon.standardError)
    }

    func testAfterSigtermANewDaemonReusesThePath() throws {
        let scratch = try Scratch(files: ["f": "again"])
        terminate(try startWaiting([], scratch: scratch))
        let second = try SpawnedDaemon(["--socket-path=\(scratch.socketPath)", "-o", "source=\(scratch.shared.path)"],
                                       in: scratch.directory)
        var connected: (VhostUserFrontend, FuseClient)?
        let deadline = Date().addingTimeInterval(10)
        while connected == nil, Date() < deadline, second.isRunning {
            connected = try? connectAndInitialize(scratch.socketPath)
            if connected == nil { usleep(20_000) }
        }
        XCTAssertEqual(try connected?.1.lookup(name: "f").attr.size, 5, second.standardError)
    }

    func testAConnectionThatClosesWithoutAMessageIsNotTakenForTheFrontend() throws {
        // What a second daemon on the same path does to see whether anyone still listens.
        let scratch = try Scratch(files: ["f": "still"])
        let daemon = try startWaiting([], scratch: scratch)
        let probe = try Sys.unixStreamSocket()
        try Sys.connect(probe, try Sys.unixAddress(scratch.socketPath))
        Sys.close(probe)
        usleep(200_000)
        XCTAssertTrue(daemon.isRunning, daemon.standardError)
        let (_, fuse) = try connectAndInitialize(scratch.socketPath)
        XCTAssertEqual(try fuse.lookup(name: "f").attr.size, 5, daemon.standardError)
        terminate(daemon)
    }

    /// What the reference does, which the tests above match for the socket file. (It exits
    /// with status 1 when signalled while waiting; ours exits 0, the status libvirt expects
    /// from a daemon it asked to stop.)
    func testReferenceDaemonLeavesItsSocketFileOnSigterm() throws {
        guard FileManager.default.isExecutableFile(atPath: DaemonProcess.referencePath) else {
            throw XCTSkip("QEMU's C virtiofsd is not installed")
        }
        let scratch = try Scratch()
        let daemon = try DaemonProcess(binary: DaemonProcess.referencePath, socketPath: scratch.socketPath,
                                       sharedDirectory: scratch.shared.path,
                                       logPath: scratch.directory.appendingPathComponent("reference.log").path)
        try Sys.signalProcess(daemon.pid, SIGTERM)
        XCTAssertNotNil(daemon.waitForExit(timeoutMilliseconds: 2000))
        var st = stat()
        XCTAssertEqual(lstat(scratch.socketPath, &st), 0)
    }
}
