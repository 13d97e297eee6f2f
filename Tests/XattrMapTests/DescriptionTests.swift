import XCTest
import XattrMap

/// `description` prints the expanded rules for the log; the text must parse back.
final class DescriptionTests: XCTestCase {
    /// A separator followed by a combining mark is one Swift `Character` with it, but the
    /// parser splits on bytes: the printed separator must not occur in a field's bytes.
    /// (Found by the xattrmap fuzz harness.)
    func testPrintedRuleAvoidsSeparatorsHiddenInCombiningSequences() throws {
        let text = "/prefix/server/fs./se:\u{07FD}user./ :ok:all:::"
        let map = try XattrMap(rules: text)
        let printed = map.description
        let again = try XattrMap(rules: printed)
        XCTAssertEqual(again.rules, map.rules, "'\(printed)' does not parse back to the rules of '\(text)'")
    }

    func testPrintedRulesParseBackToTheSameRules() throws {
        for text in [":prefix:all::user.virtiofs.::bad:all:::", ":map:trusted.:user.virtiofs.:",
                     "/prefix/client/a:b/c:d/ :ok:all:::", ":prefix:all:é:: :ok:all:::"] {
            let map = try XattrMap(rules: text)
            XCTAssertEqual(try XattrMap(rules: map.description).rules, map.rules, text)
        }
    }
}
