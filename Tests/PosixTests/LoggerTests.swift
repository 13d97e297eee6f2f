import XCTest
@testable import Posix

final class LoggerTests: XCTestCase {
    func testTimestampIsCalendarTimeWithMilliseconds() {
        let stamp = Logger.timestamp()
        // "YYYY-MM-DD hh:mm:ss.mmm"
        XCTAssertEqual(stamp.count, 23, stamp)
        let chars = Array(stamp)
        XCTAssertEqual(chars[4], "-"); XCTAssertEqual(chars[7], "-"); XCTAssertEqual(chars[10], " ")
        XCTAssertEqual(chars[13], ":"); XCTAssertEqual(chars[16], ":"); XCTAssertEqual(chars[19], ".")
        XCTAssertTrue(stamp.hasPrefix("20"), stamp)
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
