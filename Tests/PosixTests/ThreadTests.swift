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

    func testJoinThreadWaitsForTheBody() throws {
        let done = Atomic<Bool>(false)
        let thread = try Sys.startThread {
            Sys.sleep(nanoseconds: 20_000_000)
            done.store(true, ordering: .relaxed)
        }
        Sys.joinThread(thread)
        XCTAssertTrue(done.load(ordering: .relaxed))
    }

    func testSemaphoreHandsEachPostToOneWait() throws {
        let semaphore = Sys.Semaphore()
        let woken = Atomic<Int>(0)
        let threads = try (0..<3).map { _ in
            try Sys.startThread {
                semaphore.wait()
                woken.add(1, ordering: .relaxed)
            }
        }
        Sys.sleep(nanoseconds: 20_000_000)
        XCTAssertEqual(woken.load(ordering: .relaxed), 0, "nobody passes before a post")
        for _ in threads { semaphore.post() }
        threads.forEach(Sys.joinThread)
        XCTAssertEqual(woken.load(ordering: .relaxed), 3)
    }
}

final class PathWrapperTests: XCTestCase {
    func testRealpathResolvesDotDotAndLinks() throws {
        XCTAssertEqual(try Sys.realpath("/proc/self/../self/."), "/proc/\(Sys.processID)")
        XCTAssertThrowsError(try Sys.realpath("/no/such/path")) { XCTAssertEqual($0 as? Errno, .noEntry) }
    }

    func testStatPathFollowsLinksAndLstatDoesNot() throws {
        XCTAssertEqual(try Sys.statPath("/proc/self").st_mode & S_IFMT, S_IFDIR)
        XCTAssertEqual(try Sys.lstat("/proc/self").st_mode & S_IFMT, S_IFLNK)
        XCTAssertThrowsError(try Sys.statPath("/no/such/path"))
    }
}
