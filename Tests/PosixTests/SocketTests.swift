import XCTest
import Glibc
@testable import Posix

final class SocketTests: XCTestCase {
    func testUnixAddressRefusesAPathThatDoesNotFitSunPath() {
        XCTAssertThrowsError(try Sys.unixAddress("/" + String(repeating: "a", count: 108))) {
            XCTAssertEqual($0 as? Errno, .nameTooLong)
        }
        XCTAssertNoThrow(try Sys.unixAddress("/" + String(repeating: "a", count: 106)), "107 bytes and the NUL fit")
    }

    func testUnixAddressRefusesAnEmptyPathOrOneWithNUL() {
        for path in ["", "/tmp/a\u{0}b"] {
            XCTAssertThrowsError(try Sys.unixAddress(path)) { XCTAssertEqual($0 as? Errno, .invalidArgument) }
        }
    }

    func testConnectReachesAListenerAndFailsWhereNoneIs() throws {
        let path = "/tmp/posix-socket-\(getpid()).sock"
        try? Sys.unlink(path)
        let listener = try Sys.unixStreamSocket()
        defer { Sys.close(listener); try? Sys.unlink(path) }
        try Sys.bind(listener, try Sys.unixAddress(path))
        try Sys.listen(listener, backlog: 1)

        let client = try Sys.unixStreamSocket()
        defer { Sys.close(client) }
        try Sys.connect(client, try Sys.unixAddress(path))
        let accepted = try Sys.accept(listener)
        Sys.close(accepted)

        let stray = try Sys.unixStreamSocket()
        defer { Sys.close(stray) }
        XCTAssertThrowsError(try Sys.connect(stray, try Sys.unixAddress(path + ".missing"))) {
            XCTAssertEqual($0 as? Errno, .noEntry)
        }
    }

    func testRecvReadsWhatThePeerSentAndZeroAtEndOfStream() throws {
        let (a, b) = try Sys.unixStreamSocketPair()
        defer { Sys.close(a) }
        let sent: [UInt8] = [1, 2, 3]
        try sent.withUnsafeBytes { try Sys.sendAll(b, $0) }
        Sys.close(b)
        var buffer = [UInt8](repeating: 0, count: 8)
        let n = try buffer.withUnsafeMutableBytes { try Sys.recv(a, $0) }
        XCTAssertEqual(Array(buffer.prefix(n)), sent)
        XCTAssertEqual(try buffer.withUnsafeMutableBytes { try Sys.recv(a, $0) }, 0)
    }
}
