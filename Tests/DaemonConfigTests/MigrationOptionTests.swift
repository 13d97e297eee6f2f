import XCTest
@testable import DaemonConfig
import Options

/// The live-migration options (the Rust daemon's names and values).
final class MigrationOptionTests: XCTestCase {
    func testDefaultsAreFindPathsAbortAndNoChecks() {
        let o = baseOptions()
        XCTAssertEqual(o.migration.mode, .findPaths)
        XCTAssertEqual(o.migration.onError, .abort)
        XCTAssertFalse(o.migration.verifyHandles)
        XCTAssertFalse(o.migration.confirmPaths)
    }

    func testEachOptionMapsToTheModelInBothSpellings() {
        let valued: [(String, String, (inout DaemonOptions) -> Void)] = [
            ("--migration-mode", "file-handles", { $0.migration.mode = .fileHandles }),
            ("--migration-mode", "find-paths", { $0.migration.mode = .findPaths }),
            ("--migration-on-error", "guest-error", { $0.migration.onError = .guestError }),
            ("--migration-on-error", "abort", { $0.migration.onError = .abort }),
        ]
        for (name, value, change) in valued {
            var expected = baseOptions()
            change(&expected)
            XCTAssertEqual(options(base + ["\(name)=\(value)"]), expected, "\(name)=\(value)")
            XCTAssertEqual(options(base + [name, value]), expected, "\(name) \(value)")
        }
        var flags = baseOptions()
        flags.migration.verifyHandles = true
        flags.migration.confirmPaths = true
        XCTAssertEqual(options(base + ["--migration-verify-handles", "--migration-confirm-paths"]), flags)
    }

    func testBadValuesNameTheChoices() {
        let cases: [([String], String)] = [
            (base + ["--migration-mode=paths"],
             "invalid value 'paths' for '--migration-mode': expected one of find-paths, file-handles"),
            (base + ["--migration-on-error=ignore"],
             "invalid value 'ignore' for '--migration-on-error': expected one of abort, guest-error"),
            (base + ["--migration-verify-handles=1"], "option '--migration-verify-handles' does not take a value"),
        ]
        for (args, message) in cases {
            guard case .failure(let e) = parseCommandLine(args) else { return XCTFail("\(args) accepted") }
            XCTAssertEqual(e.description, message)
        }
    }
}
