import Foundation
import XCTest
import XattrMap

/// The rule sets in docs/xattr-mapping.md must do what the page says.
final class DocumentationTests: XCTestCase {
    func testEveryRuleSetInTheGuideParses() throws {
        let guide = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/xattr-mapping.md")
        let text = try String(contentsOf: guide, encoding: .utf8)
        // Each worked example is written as --xattrmap="...", possibly over several lines.
        let pieces = text.components(separatedBy: "--xattrmap=\"").dropFirst()
        let ruleSets = pieces.compactMap { $0.components(separatedBy: "\"").first }
        XCTAssertGreaterThanOrEqual(ruleSets.count, 7)
        for rules in ruleSets {
            XCTAssertNoThrow(try parse(rules), rules)
        }
    }

    func testKeepingGuestTrustedAndSecurityAwayFromTheHosts() throws {
        let map = try parse("""
            :prefix:all:trusted.:user.virtiofs.:
            :prefix:all:security.:user.virtiofs.:
            :bad:server::trusted.:
            :bad:server::security.:
            :bad:client:user.virtiofs.::
            :ok:all:::
            """)
        XCTAssertEqual(map.client("trusted.overlay.opaque"), .renamed("user.virtiofs.trusted.overlay.opaque"))
        XCTAssertEqual(map.client("security.selinux"), .renamed("user.virtiofs.security.selinux"))
        XCTAssertEqual(map.client("user.virtiofs.trusted.x"), .deny(1))
        XCTAssertEqual(map.client("user.comment"), .pass)
        XCTAssertEqual(map.server("user.virtiofs.security.selinux"), .renamed("security.selinux"))
        XCTAssertEqual(map.server("user.virtiofs.trusted.overlay.opaque"), .renamed("trusted.overlay.opaque"))
        XCTAssertEqual(map.server("security.selinux"), .hide)
        XCTAssertEqual(map.server("security.capability"), .hide)
        XCTAssertEqual(map.server("trusted.overlay.opaque"), .hide)
        XCTAssertEqual(map.server("user.comment"), .pass)
    }
}
