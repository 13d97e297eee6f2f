import XCTest
import XattrMap

/// Rule text comes from the command line and names from the guest: neither may crash us.
final class RobustnessTests: XCTestCase {
    /// A small deterministic generator, so a failure reproduces.
    struct XorShift: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return state
        }
    }

    static let noise = [":", "/", " ", "\n", "prefix", "ok", "map", "all", "user.", "é", "::", "\u{0}"]
    static let types = ["prefix", "ok", "bad", "unsupported", "map", "prefx", ""]
    static let scopes = ["all", "client", "server", "both", ""]
    static let names = ["", "", "user.", "trusted.", "user.virtiofs.", "a:b", "é"]

    /// Mostly well-formed rules, some broken, some noise between them.
    static func randomRuleText(_ rng: inout XorShift) -> String {
        var text = ""
        for _ in 0..<Int.random(in: 0...5, using: &rng) {
            let sep = [":", "/", "§"].randomElement(using: &rng) ?? ":"
            let type = types.randomElement(using: &rng) ?? ""
            var fields = [type]
            if type != "map" { fields.append(scopes.randomElement(using: &rng) ?? "") }
            fields.append(names.randomElement(using: &rng) ?? "")
            fields.append(names.randomElement(using: &rng) ?? "")
            var rule = sep + fields.joined(separator: sep) + sep
            // Sometimes cut the rule short, sometimes add noise after it.
            if Int.random(in: 0..<8, using: &rng) == 0 {
                rule = String(rule.prefix(Int.random(in: 0...rule.count, using: &rng)))
            }
            if Int.random(in: 0..<8, using: &rng) == 0 { rule += noise.randomElement(using: &rng) ?? "" }
            text += rule + ([" ", "\n", "\t", ""].randomElement(using: &rng) ?? "")
        }
        return text
    }

    func testRandomRuleTextEitherParsesOrFailsWithinTheText() {
        var rng = XorShift(state: 0x9E37_79B9_7F4A_7C15)
        var parsed = 0
        for _ in 0..<20_000 {
            let text = Self.randomRuleText(&rng)
            do {
                let map = try parse(text)
                parsed += 1
                XCTAssertFalse(map.rules.isEmpty, text)
                // Whatever the rules, every name gets some answer and listings never grow.
                for name in ["", "user.a", "trusted.x", "user.virtiofs.", "user.virtiofs.trusted.x", "é"] {
                    _ = map.client(name)
                    _ = map.server(name)
                }
                let host = nulList(["user.a", "trusted.x", "user.virtiofs.", "user.virtiofs.trusted.x"])
                let (guest, size) = map.listing(host)
                XCTAssertLessThanOrEqual(guest.count, host.count, text)
                XCTAssertEqual(size, guest.count, text)
            } catch {
                XCTAssertGreaterThanOrEqual(error.ruleIndex, 1, text)
                XCTAssertLessThanOrEqual(error.position, text.unicodeScalars.count, text)
                XCTAssertGreaterThanOrEqual(error.position, 0, text)
            }
        }
        // The generator must actually reach valid rule sets, or this test proves little.
        XCTAssertGreaterThan(parsed, 500)
    }

    func testRandomListingBytesNeverTrap() throws {
        let map = try parse(":map:trusted.:user.virtiofs.:")
        var rng = XorShift(state: 42)
        for _ in 0..<5_000 {
            let count = Int.random(in: 0...64, using: &rng)
            let host = (0..<count).map { _ in [0, 0x2E, 0x75, 0x74, 0xFF].randomElement(using: &rng) ?? 0 } as [UInt8]
            let (guest, size) = map.listing(host)
            XCTAssertLessThanOrEqual(guest.count, host.count + 1)
            XCTAssertEqual(size, guest.count)
            XCTAssertTrue(guest.isEmpty || guest.last == 0)
        }
    }
}
