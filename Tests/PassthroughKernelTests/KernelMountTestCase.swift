import XCTest
import Foundation
import Glibc
import CVirtioFS
import FUSE
import HostFUSE
import Posix
import Options
import Passthrough

/// A host FUSE mount of a temporary shared directory, served in this process by the
/// passthrough backend behind the dispatcher, torn down after each test.
class KernelMountTestCase: XCTestCase {
    var shared = ""
    var mountpoint = ""
    var session: HostFUSESession<PassthroughFileSystem>?
    var shutdown: Int32 = -1
    let finished = DispatchSemaphore(value: 0)

    func temporaryDirectory(_ label: String) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(label)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    func mount(_ adjust: (inout PassthroughConfiguration) -> Void = { _ in }) throws {
        try XCTSkipUnless(geteuid() == 0, "mounting needs root")
        try XCTSkipUnless(access("/dev/fuse", R_OK | W_OK) == 0, "no /dev/fuse")
        shared = try temporaryDirectory("pt-shared")
        mountpoint = try temporaryDirectory("pt-mnt")
        var configuration = PassthroughConfiguration(root: shared)
        configuration.xattr = true
        configuration.posixLocks = true
        configuration.flock = true
        adjust(&configuration)
        let fs = try PassthroughFileSystem(configuration: configuration, logger: .discarding)
        let server = Server(filesystem: fs, options: ServerOptions(), logger: .discarding)
        session = try HostFUSESession(mountpoint: mountpoint, server: server, threads: 2, logger: .discarding)
        shutdown = try Sys.eventfd()
        let running = session
        let done = finished
        let stop = shutdown
        Thread.detachNewThread {
            running?.run(shutdownFD: stop)
            done.signal()
        }
    }

    override func tearDown() {
        if session != nil {
            try? Sys.eventfdSignal(shutdown)
            XCTAssertEqual(finished.wait(timeout: .now() + 20), .success, "the session did not stop")
            session = nil
            Sys.close(shutdown)
            rmdir(mountpoint)
            try? FileManager.default.removeItem(atPath: shared)
        }
        super.tearDown()
    }

    func m(_ relative: String) -> String { mountpoint + "/" + relative }
    func h(_ relative: String) -> String { shared + "/" + relative }

    /// Runs `body` on this thread as `uid`/`gid` with no supplementary groups, the way a
    /// guest user's process reaches the mount: the kernel's FUSE client sends this
    /// thread's fsuid/fsgid, and leaving uid 0 drops the thread's effective capabilities
    /// (CAP_FSETID among them). Only this thread changes (raw per-thread system calls).
    func asUser<T>(_ uid: uid_t, _ gid: gid_t, _ body: () throws -> T) throws -> T {
        let groups = try Sys.getgroups()
        try Sys.threadSetgroups([])
        try Sys.threadSetresgid(UInt32.max, gid, UInt32.max)
        try Sys.threadSetresuid(UInt32.max, uid, UInt32.max)
        defer {
            do {
                try Sys.threadSetresuid(UInt32.max, 0, UInt32.max)
                try Sys.threadSetresgid(UInt32.max, 0, UInt32.max)
                try Sys.threadSetgroups(groups)
            } catch {
                fatalError("the test thread cannot become root again: \(error)")
            }
        }
        return try body()
    }
}
