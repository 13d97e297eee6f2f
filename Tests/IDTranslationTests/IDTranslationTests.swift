import IDTranslation
import XCTest

final class RuleParserTests: XCTestCase {
    func testEveryRuleFormParses() throws {
        XCTAssertEqual(try TranslationRule(parsing: "guest:0:1000:10"), .guest(guestBase: 0, hostBase: 1000, count: 10))
        XCTAssertEqual(try TranslationRule(parsing: "host:1000:0:10"), .host(hostBase: 1000, guestBase: 0, count: 10))
        XCTAssertEqual(try TranslationRule(parsing: "squash-guest:0:1001:4294967295"),
                       .squashGuest(guestBase: 0, host: 1001, count: 4294967295))
        XCTAssertEqual(try TranslationRule(parsing: "squash-host:5:7:3"), .squashHost(hostBase: 5, guest: 7, count: 3))
        XCTAssertEqual(try TranslationRule(parsing: "forbid-guest:2001:4294965294"),
                       .forbidGuest(guestBase: 2001, count: 4294965294))
        XCTAssertEqual(try TranslationRule(parsing: "map:1000:1000:1"), .map(guestBase: 1000, hostBase: 1000, count: 1))
    }

    func testDescriptionIsTheParsedText() throws {
        for text in ["guest:0:1000:10", "host:1:2:3", "squash-guest:0:9:4", "squash-host:9:0:4", "forbid-guest:0:5", "map:7:8:9"] {
            XCTAssertEqual(try TranslationRule(parsing: text).description, text)
        }
    }

    func testMalformedRulesAreRefusedWithAReason() {
        let cases: [(String, String)] = [
            ("", "TYPE is one of"),
            ("swap:0:1:1", "unknown type \"swap\""),
            ("map:0:1", "expected map:SOURCE:TARGET:COUNT"),
            ("map:0:1:1:", "expected map:SOURCE:TARGET:COUNT"),
            ("forbid-guest:0:1:1", "expected forbid-guest:BASE:COUNT"),
            ("map:-1:0:1", "\"-1\" is not a number"),
            ("map:0:4294967296:1", "\"4294967296\" is not a number"),
            ("map:0:x:1", "\"x\" is not a number"),
            ("map:0::1", "\"\" is not a number"),
            ("map:0:0:0", "the count must be at least 1"),
            ("guest:4294967295:0:2", "guest range 4294967295+2 runs past"),
            ("map:0:4294967295:2", "host range 4294967295+2 runs past"),
            ("MAP:0:0:1", "unknown type"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try TranslationRule(parsing: text), text) { error in
                guard case .malformed(let rule, let why)? = error as? TranslationError else {
                    return XCTFail("\(text): \(error)")
                }
                XCTAssertEqual(rule, text)
                XCTAssertTrue(why.contains(expected), "\(text): \(why)")
            }
        }
    }

    func testARangeMayEndExactlyAtTheTopOfTheIDSpace() throws {
        XCTAssertNoThrow(try TranslationRule(parsing: "forbid-guest:4294967295:1"))
        XCTAssertNoThrow(try TranslationRule(parsing: "squash-guest:1:0:4294967295"))
    }
}

final class TranslationTableTests: XCTestCase {
    func table(_ rules: [String]) throws -> IDTranslation {
        try IDTranslation(rules: rules.map { try TranslationRule(parsing: $0) })
    }

    func testNoRulesIsIdentity() throws {
        let t = try table([])
        XCTAssertTrue(t.isIdentity)
        for id: UInt32 in [0, 1, 1000, 65534, .max] {
            XCTAssertEqual(t.toHost(id), id)
            XCTAssertEqual(t.toGuest(id), id)
        }
    }

    func testMapIsOneToOneBothWaysAndLeavesOtherIDsAlone() throws {
        let t = try table(["map:0:100000:65536"])
        XCTAssertFalse(t.isIdentity)
        XCTAssertEqual(t.toHost(0), 100000)
        XCTAssertEqual(t.toHost(65535), 165535)
        XCTAssertEqual(t.toHost(65536), 65536, "outside every rule: unchanged")
        XCTAssertEqual(t.toGuest(100000), 0)
        XCTAssertEqual(t.toGuest(165535), 65535)
        XCTAssertEqual(t.toGuest(99999), 99999)
    }

    func testGuestAndHostRulesWorkInOneDirectionOnly() throws {
        let t = try table(["guest:0:5000:10", "host:7000:20:5"])
        XCTAssertEqual(t.toHost(3), 5003)
        XCTAssertEqual(t.toGuest(5003), 5003, "a guest rule does not imply the way back")
        XCTAssertEqual(t.toGuest(7004), 24)
        XCTAssertEqual(t.toHost(24), 24, "a host rule does not imply the way there")
    }

    func testSquashSendsAWholeRangeToOneID() throws {
        // The rootless example: every guest user writes as the daemon's 1001, which the
        // guest sees as 1000.
        let t = try table(["squash-guest:0:1001:4294967295", "host:1001:1000:1"])
        XCTAssertEqual(t.toHost(0), 1001)
        XCTAssertEqual(t.toHost(1000), 1001)
        XCTAssertEqual(t.toHost(4294967294), 1001)
        XCTAssertEqual(t.toGuest(1001), 1000)
        XCTAssertEqual(t.toGuest(0), 0)
        let s = try table(["squash-host:100:7:50"])
        XCTAssertEqual(s.toGuest(100), 7)
        XCTAssertEqual(s.toGuest(149), 7)
        XCTAssertEqual(s.toGuest(150), 150)
    }

    func testForbiddenGuestIDsHaveNoHostID() throws {
        // Only 1000 and 2000 allowed, as a KubeVirt-style fixed-uid setup would say.
        let t = try table(["forbid-guest:0:1000", "map:1000:1000:1", "forbid-guest:1001:999",
                           "map:2000:2000:1", "forbid-guest:2001:4294965295"])
        XCTAssertNil(t.toHost(0))
        XCTAssertNil(t.toHost(999))
        XCTAssertEqual(t.toHost(1000), 1000)
        XCTAssertNil(t.toHost(1001))
        XCTAssertNil(t.toHost(1999))
        XCTAssertEqual(t.toHost(2000), 2000)
        XCTAssertNil(t.toHost(2001))
        XCTAssertNil(t.toHost(.max))
        XCTAssertEqual(t.toGuest(0), 0, "forbid-guest says nothing about host ids")
    }

    func testOverlappingGuestRangesAreRefusedNamingBothRules() throws {
        XCTAssertThrowsError(try table(["map:0:1000:10", "squash-guest:9:5:1"])) { error in
            XCTAssertEqual(error as? TranslationError, .overlap("squash-guest:9:5:1", "map:0:1000:10", side: "guest"))
        }
        XCTAssertThrowsError(try table(["forbid-guest:0:1000", "forbid-guest:999:10"]))
        XCTAssertThrowsError(try table(["guest:5:0:1", "map:5:100:1"]))
    }

    func testOverlappingHostRangesAreRefused() throws {
        XCTAssertThrowsError(try table(["map:0:1000:10", "host:1009:0:1"])) { error in
            XCTAssertEqual(error as? TranslationError, .overlap("host:1009:0:1", "map:0:1000:10", side: "host"))
        }
        XCTAssertThrowsError(try table(["squash-host:0:1:10", "squash-host:5:1:1"]))
    }

    func testAdjacentRangesAndOppositeSidesDoNotOverlap() throws {
        XCTAssertNoThrow(try table(["map:0:1000:10", "map:10:1010:10"]))
        // A guest rule and a host rule over the same numbers live on different sides.
        XCTAssertNoThrow(try table(["guest:0:1000:10", "host:0:1000:10"]))
        XCTAssertNoThrow(try table(["squash-guest:0:5:10", "squash-host:0:5:10"]))
    }

    func testLookupFindsTheRightRuleAmongMany() throws {
        // Rules given out of order; every tenth block of ten mapped up by a million.
        var rules: [String] = []
        for block in stride(from: 990, through: 0, by: -10) { rules.append("map:\(block * 10):\(1_000_000 + block * 10):10") }
        let t = try table(rules)
        for id: UInt32 in [0, 9, 10, 99, 5000, 9909, 9999] {
            let expected: UInt32 = (id / 10) % 10 == 0 ? 1_000_000 + id : id
            XCTAssertEqual(t.toHost(id), expected, "\(id)")
        }
    }

    func testParsingSetupErrorsNameTheOption() {
        XCTAssertThrowsError(try IDTranslations(uidRules: ["map:0:0:1"], gidRules: ["nope:1"])) { error in
            let text = "\(error)"
            XCTAssertTrue(text.hasPrefix("--translate-gid: invalid rule \"nope:1\""), text)
        }
        XCTAssertThrowsError(try IDTranslations(uidRules: ["map:0:0:2", "map:1:5:1"], gidRules: [])) { error in
            XCTAssertTrue("\(error)".hasPrefix("--translate-uid: rule \"map:1:5:1\" overlaps \"map:0:0:2\""), "\(error)")
        }
    }
}
