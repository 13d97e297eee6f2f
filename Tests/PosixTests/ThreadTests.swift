import Glibc
import Posix
import Synchronization
import XCTest

final class ThreadTests: XCTestCase {
    func testStartedThreadRunsItsBodyOnAnotherThreadBeforeTheJoinReturns() throws {
        let ranOn = Atomic<UInt64>(0)
        let thread = try Sys.startThread { ranOn.store(UInt64(pthread_self()), ordering: .relaxed) }
        XCTAssertEqual(pthread_join(thread, nil), 0)
        XCTAssertNotEqual(ranOn.load(ordering: .relaxed), 0)
        XCTAssertNotEqual(ranOn.load(ordering: .relaxed), UInt64(pthread_self()))
    }
}
