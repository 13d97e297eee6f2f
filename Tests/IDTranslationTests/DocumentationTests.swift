import Foundation
import IDTranslation
import XCTest

/// The worked examples in docs/identity.md must do what the page says.
final class IdentityDocumentationTests: XCTestCase {
    /// The uid and gid rules of each ``` block that gives any, in page order.
    func examples() throws -> [(uid: IDTranslation, gid: IDTranslation)] {
        let page = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/identity.md")
        let text = try String(contentsOf: page, encoding: .utf8)
        let blocks = text.components(separatedBy: "```").enumerated().filter { $0.offset % 2 == 1 }.map(\.element)
        var result: [(IDTranslation, IDTranslation)] = []
        for block in blocks {
            var uid: [String] = [], gid: [String] = []
            for word in block.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\\" }) {
                if word.hasPrefix("--translate-uid=") { uid.append(String(word.dropFirst("--translate-uid=".count))) }
                if word.hasPrefix("--translate-gid=") { gid.append(String(word.dropFirst("--translate-gid=".count))) }
            }
            if uid.isEmpty && gid.isEmpty { continue }
            let built = try IDTranslations(uidRules: uid, gidRules: gid)
            result.append((built.uid, built.gid))
        }
        return result
    }

    func testTheRootlessRunnerSquashesEveryoneOntoTheRunner() throws {
        let all = try examples()
        XCTAssertEqual(all.count, 2)
        let (uid, gid) = try XCTUnwrap(all.first)
        for guest: UInt32 in [0, 1000, 1234, 4294967294] {
            XCTAssertEqual(uid.toHost(guest), 1001)
            XCTAssertEqual(gid.toHost(guest), 100)
        }
        XCTAssertEqual(uid.toGuest(1001), 1000)
        XCTAssertEqual(gid.toGuest(100), 1000)
        XCTAssertEqual(uid.toGuest(0), 0, "other host owners show unchanged")
    }

    func testTheFixedUIDExampleAllowsOnlyUser1000AndRoot() throws {
        let all = try examples()
        XCTAssertEqual(all.count, 2)
        let (uid, gid) = all[1]
        for table in [uid, gid] {
            XCTAssertEqual(table.toHost(1000), 107)
            XCTAssertEqual(table.toHost(0), 107)
            XCTAssertEqual(table.toGuest(107), 1000)
            for forbidden: UInt32 in [1, 999, 1001, 65534, 4294967294] {
                XCTAssertNil(table.toHost(forbidden), "\(forbidden)")
            }
        }
    }
}
