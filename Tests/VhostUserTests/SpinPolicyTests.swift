import XCTest
@testable import VhostUser

final class SpinPolicyTests: XCTestCase {
    func testWatchingThatKeepsFindingWorkStaysAtTheMaximum() {
        var policy = SpinPolicy()
        for _ in 0..<100 {
            let window = policy.nextWindow()
            XCTAssertEqual(window, SpinPolicy.maximum)
            policy.record(found: true, window: window)
        }
    }

    func testWatchingThatFindsNothingStopsAfterHalvingBelowTheMinimum() {
        var policy = SpinPolicy()
        var windows: [UInt64] = []
        while true {
            let window = policy.nextWindow()
            if window == 0 { break }
            windows.append(window)
            policy.record(found: false, window: window)
            XCTAssertLessThan(windows.count, 10, "watching never stopped")
            if windows.count >= 10 { return }
        }
        XCTAssertEqual(windows, [40_000, 20_000, 10_000, 5_000])
    }

    func testStoppedWatchingIsProbedAgainAndComesBackWhenItPays() {
        var policy = SpinPolicy()
        for _ in 0..<4 { policy.record(found: false, window: policy.nextWindow()) }
        XCTAssertEqual(policy.window, 0)
        // Off: sleep at once, except one short look every probeInterval sleeps.
        var looks: [UInt64] = []
        for _ in 0..<(2 * SpinPolicy.probeInterval) {
            let window = policy.nextWindow()
            if window > 0 {
                looks.append(window)
                policy.record(found: false, window: window)
            }
        }
        XCTAssertEqual(looks, [SpinPolicy.minimum, SpinPolicy.minimum])
        // A probe that finds work turns watching back on and it grows back to the maximum.
        var window: UInt64 = 0
        while window == 0 { window = policy.nextWindow() }
        policy.record(found: true, window: window)
        var grown: [UInt64] = []
        for _ in 0..<4 {
            let w = policy.nextWindow()
            grown.append(w)
            policy.record(found: true, window: w)
        }
        XCTAssertEqual(grown, [10_000, 20_000, 40_000, 40_000])
    }
}
