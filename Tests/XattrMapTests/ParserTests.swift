import XCTest
import XattrMap

final class ParserTests: XCTestCase {
    // The examples of the virtiofsd manual, and the rules each stands for.
    static let documentedExamples: [(text: String, rules: [R])] = [
        (":prefix:all::user.virtiofs.::bad:all:::",
         [R(.prefix, .all, key: "", prepend: "user.virtiofs."), R(.bad, .all, key: "", prepend: "")]),
        (":map::user.virtiofs.:",
         [R(.prefix, .all, key: "", prepend: "user.virtiofs."), R(.bad, .all, key: "", prepend: "")]),
        ("""
         /prefix/all/trusted./user.virtiofs./
         /bad/server//trusted./
         /bad/client/user.virtiofs.//
         /ok/all///
         """,
         [R(.prefix, .all, key: "trusted.", prepend: "user.virtiofs."),
          R(.bad, .server, key: "", prepend: "trusted."),
          R(.bad, .client, key: "user.virtiofs.", prepend: ""),
          R(.ok, .all, key: "", prepend: "")]),
        ("/map/trusted./user.virtiofs./",
         [R(.prefix, .all, key: "trusted.", prepend: "user.virtiofs."),
          R(.bad, .server, key: "", prepend: "trusted."),
          R(.bad, .client, key: "user.virtiofs.", prepend: ""),
          R(.ok, .all, key: "", prepend: "")]),
        ("/bad/all/security./security./ /ok/all///",
         [R(.bad, .all, key: "security.", prepend: "security."), R(.ok, .all, key: "", prepend: "")]),
        ("/unsupported/all/security.selinux/security.selinux/ /ok/all///",
         [R(.unsupported, .all, key: "security.selinux", prepend: "security.selinux"),
          R(.ok, .all, key: "", prepend: "")]),
        // The single-rule examples of the manual's table, each closed by a catch-all.
        (":prefix:client:trusted.:user.virtiofs.: :ok:all:::",
         [R(.prefix, .client, key: "trusted.", prepend: "user.virtiofs."), R(.ok, .all, key: "", prepend: "")]),
        (":prefix:server::user.virtiofs.: :ok:all:::",
         [R(.prefix, .server, key: "", prepend: "user.virtiofs."), R(.ok, .all, key: "", prepend: "")]),
        (":ok:client:user.:: :ok:server::security.: :bad:server::security.: :bad:all:::",
         [R(.ok, .client, key: "user.", prepend: ""), R(.ok, .server, key: "", prepend: "security."),
          R(.bad, .server, key: "", prepend: "security."), R(.bad, .all, key: "", prepend: "")]),
        (":ok:all:::", [R(.ok, .all, key: "", prepend: "")]),
    ]

    func testEveryDocumentedExampleParsesToItsRules() throws {
        for (text, expected) in Self.documentedExamples {
            XCTAssertEqual(try parse(text).rules, expected, text)
        }
    }

    func testMapShorthandEqualsTheLongFormOfTheManual() throws {
        XCTAssertEqual(try parse(":map::user.virtiofs.:").rules,
                       try parse(":prefix:all::user.virtiofs.::bad:all:::").rules)
        XCTAssertEqual(try parse("/map/trusted./user.virtiofs./").rules,
                       try parse("/prefix/all/trusted./user.virtiofs./ /bad/server//trusted./ "
                                 + "/bad/client/user.virtiofs.// /ok/all///").rules)
    }

    func testMapMayFollowOtherRules() throws {
        XCTAssertEqual(try parse(":unsupported:all:security.selinux:security.selinux: :map::user.vm.:").rules,
                       [R(.unsupported, .all, key: "security.selinux", prepend: "security.selinux"),
                        R(.prefix, .all, key: "", prepend: "user.vm."), R(.bad, .all, key: "", prepend: "")])
    }

    func testEachRuleChoosesItsOwnSeparator() throws {
        XCTAssertEqual(try parse(":prefix:all::user.virtiofs.: /bad/all/// |ok|all|||").rules,
                       [R(.prefix, .all, key: "", prepend: "user.virtiofs."),
                        R(.bad, .all, key: "", prepend: ""), R(.ok, .all, key: "", prepend: "")])
    }

    func testAnotherRulesSeparatorIsAnOrdinaryCharacter() throws {
        XCTAssertEqual(try parse("/ok/client/a:b// :ok:all:::").rules.first,
                       R(.ok, .client, key: "a:b", prepend: ""))
    }

    func testBlanksAndNewlinesMayStandBetweenAndAroundRules() throws {
        XCTAssertEqual(try parse(" \t\n:ok:client:user.::\r\n\t \u{0B}\u{0C}:bad:all:::\n\n").rules,
                       [R(.ok, .client, key: "user.", prepend: ""), R(.bad, .all, key: "", prepend: "")])
    }

    func testBlanksInsideFieldsAreKept() throws {
        XCTAssertEqual(try parse(":ok:client: user.:: :ok:all:::").rules.first?.key, bytes(" user."))
    }

    func testNonASCIISeparatorAndUTF8Fields() throws {
        XCTAssertEqual(try parse("§prefix§all§§user.é.§ §bad§all§§§").rules,
                       [R(.prefix, .all, key: "", prepend: "user.é."), R(.bad, .all, key: "", prepend: "")])
    }

    struct BadInput {
        var text: String
        var rule: Int
        var position: Int
        var message: String
        var line: UInt = #line
    }

    static let badInputs: [BadInput] = [
        BadInput(text: "", rule: 1, position: 0, message: "expected a rule such as ':ok:all:::', found an empty rule set"),
        BadInput(text: " \n\t ", rule: 1, position: 4, message: "found an empty rule set"),
        BadInput(text: ":prefx:all:::", rule: 1, position: 1,
                 message: "expected type prefix|ok|bad|unsupported|map, found 'prefx'"),
        BadInput(text: "::all:::", rule: 1, position: 1, message: "expected type prefix|ok|bad|unsupported|map, found ''"),
        BadInput(text: ":", rule: 1, position: 1, message: "expected type prefix|ok|bad|unsupported|map, found end of input"),
        BadInput(text: ":OK:all:::", rule: 1, position: 1, message: "found 'OK'"),
        BadInput(text: ":ok:everyone:::", rule: 1, position: 4,
                 message: "expected scope client|server|all, found 'everyone'"),
        BadInput(text: ":ok", rule: 1, position: 3, message: "expected ':' to end the type field, found end of input"),
        BadInput(text: ":ok:all", rule: 1, position: 7, message: "expected ':' to end the scope field, found end of input"),
        BadInput(text: ":ok:all:", rule: 1, position: 8, message: "expected ':' to end the key field, found end of input"),
        BadInput(text: ":ok:all::", rule: 1, position: 9, message: "expected ':' to end the prepend field"),
        BadInput(text: ":ok:all:::\n:bad:all::", rule: 2, position: 21, message: "expected ':' to end the prepend field"),
        // A stray character after a complete rule starts a rule of its own, which then is incomplete.
        BadInput(text: ":ok:all:::x", rule: 2, position: 11, message: "found end of input"),
        BadInput(text: "/map/trusted./user.virtiofs.", rule: 1, position: 28,
                 message: "expected '/' to end the prepend field, found end of input"),
        BadInput(text: "/map/trusted.", rule: 1, position: 13, message: "expected '/' to end the key field"),
        BadInput(text: ":ok:all:a\u{0}b::", rule: 1, position: 9, message: "NUL is not allowed in a rule"),
        BadInput(text: "\u{0}ok\u{0}all\u{0}\u{0}\u{0}", rule: 1, position: 0, message: "expected a separator, found NUL"),
        BadInput(text: ":map::user.vm.: :ok:all:::", rule: 1, position: 16,
                 message: "expected the map rule to be the last rule, found rule 2 after it"),
        BadInput(text: ":ok:client:user.:: :map:trusted.:user.vm.: :bad:all:::", rule: 2, position: 43,
                 message: "expected the map rule to be the last rule, found rule 3 after it"),
        BadInput(text: ":map::user.a.: :map::user.b.:", rule: 2, position: 15,
                 message: "expected at most one map rule, found a second one (rule 1 is a map rule)"),
        BadInput(text: ":prefix:all:trusted.:user.virtiofs.:", rule: 1, position: 36,
                 message: "expected a final catch-all rule matching every name (an all rule with empty key and prepend)"),
        BadInput(text: ":ok:client::: :bad:server::security.:", rule: 2, position: 37,
                 message: "matching every server name (a server or all rule with an empty prepend)"),
        BadInput(text: ":ok:server::: :bad:client:security.::", rule: 2, position: 37,
                 message: "matching every client name (a client or all rule with an empty key)"),
        BadInput(text: "/bad/all/security./security./", rule: 1, position: 29, message: "catch-all"),
        // Errors name the written rule, not the expanded one.
        BadInput(text: "  §ok§all§§§ §prefx§all§§§", rule: 2, position: 14, message: "found 'prefx'"),
    ]

    func testEveryMalformedRuleSetIsRejectedNamingRulePositionAndExpectation() {
        for bad in Self.badInputs {
            XCTAssertThrowsError(try parse(bad.text), bad.text, line: bad.line) { error in
                guard let error = error as? XattrMapError else {
                    return XCTFail("not an XattrMapError: \(error)", line: bad.line)
                }
                XCTAssertEqual(error.ruleIndex, bad.rule, "rule index for \(bad.text.debugDescription)", line: bad.line)
                XCTAssertEqual(error.position, bad.position, "position for \(bad.text.debugDescription)", line: bad.line)
                XCTAssertTrue(error.message.contains(bad.message),
                              "\(error.message.debugDescription) lacks \(bad.message.debugDescription)", line: bad.line)
            }
        }
    }

    func testErrorDescriptionNamesRuleAndPosition() {
        XCTAssertThrowsError(try parse(":ok:all::: :prefx:all:::")) { error in
            XCTAssertEqual("\(error)",
                           "xattrmap rule 2 at position 12: expected type prefix|ok|bad|unsupported|map, found 'prefx'")
        }
    }

    func testRuleDescriptionParsesBackToTheSameRules() throws {
        for (text, _) in Self.documentedExamples {
            let rules = try parse(text).rules
            let printed = rules.map(\.description).joined(separator: " ")
            XCTAssertEqual(try parse(printed).rules, rules, printed)
        }
    }

    func testMapDescriptionShowsTheExpandedRules() throws {
        let map = try parse("/map/trusted./user.virtiofs./")
        XCTAssertEqual(map.description,
                       ":prefix:all:trusted.:user.virtiofs.: :bad:server::trusted.: :bad:client:user.virtiofs.:: :ok:all:::")
        XCTAssertEqual(try parse(map.description), map)
    }

    func testRuleDescriptionAvoidsSeparatorsUsedInFields() throws {
        let rule = R(.prefix, .client, key: "a:b", prepend: "c/d")
        XCTAssertEqual(rule.description, "|prefix|client|a:b|c/d|")
        XCTAssertEqual(try parse(rule.description + " :ok:all:::").rules.first, rule)
    }
}
