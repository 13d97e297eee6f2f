import XCTest
@testable import Posix

final class LoggerTests: XCTestCase {
    func testTimestampIsCalendarTimeWithMilliseconds() {
        let stamp = Logger.timestamp()
        // "YYYY-MM-DDThh:mm:ss.mmmZ": the zone is part of it
        XCTAssertEqual(stamp.count, 24, stamp)
        let chars = Array(stamp)
        XCTAssertEqual(chars[4], "-"); XCTAssertEqual(chars[7], "-"); XCTAssertEqual(chars[10], "T")
        XCTAssertEqual(chars[23], "Z")
        XCTAssertEqual(chars[13], ":"); XCTAssertEqual(chars[16], ":"); XCTAssertEqual(chars[19], ".")
        XCTAssertTrue(stamp.hasPrefix("20"), stamp)
    }

    func testAMissingSyslogSocketIsNoticed() {
        XCTAssertTrue(Logger.syslogSocketMissing("/nonexistent/log"))
        XCTAssertTrue(Logger.syslogSocketMissing("/"), "a directory is not a socket")
    }

    func testDisabledLevelsDoNotEvaluateTheirMessage() {
        let logger = Logger(level: .warning, destination: .discard)
        var evaluated = false
        logger.debug({ evaluated = true; return "x" }())
        XCTAssertFalse(evaluated)
        logger.error({ evaluated = true; return "x" }())
        XCTAssertTrue(evaluated)
    }
}
