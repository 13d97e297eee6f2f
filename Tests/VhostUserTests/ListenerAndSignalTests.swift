import XCTest
import Foundation
import Glibc
import Posix
@testable import VhostUser

final class ListenerTests: XCTestCase {
    private var directory = ""
    private var path: String { directory + "/vhost.sock" }

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "vhost-listener-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testBindsPrivateSocketAndCreatesNothingElse() throws {
        let fd = try Listener.bindSocket(path: path)
        defer { Sys.close(fd) }
        let st = try Sys.lstat(path)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["vhost.sock"])
        XCTAssertEqual(try Listener.adopt(fd: fd), fd)
    }

    func testGroupSocketIsGroupAccessible() throws {
        let fd = try Listener.bindSocket(path: path, group: getgid())
        defer { Sys.close(fd) }
        XCTAssertEqual(try Sys.lstat(path).st_mode & 0o777, 0o660)
    }

    func testRefusesWhenAnotherDaemonListensAndReplacesAStaleSocket() throws {
        let first = try Listener.bindSocket(path: path)
        XCTAssertThrowsError(try Listener.bindSocket(path: path)) { error in
            XCTAssertEqual(error as? ListenerError, .anotherDaemonListening(path))
            XCTAssertEqual("\(error)", "another daemon is listening on \(path)")
        }
        Sys.close(first)
        // The file is left behind; nothing answers any more.
        let second = try Listener.bindSocket(path: path)
        Sys.close(second)
    }

    func testRefusesToReplaceARegularFile() throws {
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data()))
        XCTAssertThrowsError(try Listener.bindSocket(path: path)) { error in
            XCTAssertEqual(error as? ListenerError, .notASocket(path))
        }
    }

    func testAdoptRejectsWhatIsNotAListeningUnixStreamSocket() throws {
        let (a, b) = try Sys.unixStreamSocketPair()
        defer { Sys.close(a); Sys.close(b) }
        XCTAssertThrowsError(try Listener.adopt(fd: a)) { error in
            XCTAssertEqual(error as? ListenerError, .notAListeningSocket(fd: a, reason: "socket \(a) is not listening (call listen(2) before passing it)"))
        }
        let file = try Sys.memfdCreate("not-a-socket")
        defer { Sys.close(file) }
        XCTAssertThrowsError(try Listener.adopt(fd: file)) { error in
            XCTAssertEqual("\(error)", "--fd=\(file): descriptor \(file) is not a socket; it must be a listening UNIX stream socket")
        }
        XCTAssertThrowsError(try Listener.adopt(fd: 999)) { error in
            XCTAssertTrue("\(error)".hasPrefix("--fd=999: descriptor 999 is not open;"), "\(error)")
        }
        let udp = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { Sys.close(udp) }
        XCTAssertThrowsError(try Listener.adopt(fd: udp)) { error in
            XCTAssertEqual(error as? ListenerError, .notAListeningSocket(fd: udp, reason: "descriptor \(udp) is not a UNIX socket"))
        }
    }

    func testAcceptOneReturnsAConnectionOrNilOnShutdown() throws {
        let listener = try Listener.bindSocket(path: path)
        defer { Sys.close(listener) }
        let shutdown = try Sys.eventfd()
        defer { Sys.close(shutdown) }
        let client = try Sys.unixStreamSocket()
        defer { Sys.close(client) }
        try Sys.connect(client, try Sys.unixAddress(path))
        let accepted = try Listener.acceptOne(listenFD: listener, shutdownFD: shutdown)
        XCTAssertNotNil(accepted)
        accepted.map(Sys.close)
        try Sys.eventfdSignal(shutdown)
        XCTAssertNil(try Listener.acceptOne(listenFD: listener, shutdownFD: shutdown))
    }

    func testTooLongPathIsAClearError() {
        let long = "/tmp/" + String(repeating: "x", count: 120)
        XCTAssertThrowsError(try Listener.bindSocket(path: long)) { error in
            XCTAssertEqual(error as? ListenerError, .pathTooLong(long))
        }
    }
}

final class SignalTests: XCTestCase {
    func testShutdownSignalBecomesReadableOnTheSignalfd() throws {
        var saved = sigset_t()
        pthread_sigmask(SIG_SETMASK, nil, &saved)
        let fd = try Signals.blockShutdownSignals()
        defer {
            Sys.close(fd)
            // Later tests start children, which would inherit a blocked SIGTERM.
            pthread_sigmask(SIG_SETMASK, &saved, nil)
        }
        // Directed at this thread, which has the signal blocked: it waits in the signalfd.
        XCTAssertEqual(pthread_kill(pthread_self(), SIGTERM), 0)
        XCTAssertTrue(waitReadable(fd))
        XCTAssertEqual(try Signals.readSignal(fd), SIGTERM)
    }
}

final class ListenerRenameTests: XCTestCase {
    func testSocketFileAppearsOnlyOnceListeningAndNoTemporaryNameRemains() throws {
        let dir = "/tmp/vu-rename-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        XCTAssertEqual(mkdir(dir, 0o700), 0)
        defer { _ = rmdir(dir) }
        let path = dir + "/s.sock"
        let fd = try Listener.bindSocket(path: path)
        defer { Sys.close(fd); _ = unlink(path) }
        // The only entry is the final name, and it accepts connections at once.
        let names = try FileManager.default.contentsOfDirectory(atPath: dir)
        XCTAssertEqual(names, ["s.sock"])
        let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(client) }
        var address = try Sys.unixAddress(path)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(client, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        XCTAssertEqual(rc, 0, "connect: \(Errno.current)")
    }
}
