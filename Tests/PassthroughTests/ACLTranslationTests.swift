import XCTest
import CVirtioFS
import IDTranslation
import Posix
@testable import Passthrough

/// The ACL xattr rewriting on its own: any bytes in, never a trap.
final class ACLTranslationTests: XCTestCase {
    let ids = try! IDTranslations(uidRules: ["map:1000:2000:10", "forbid-guest:1100:1"], gidRules: ["map:1000:3000:10"])

    /// A version-2 ACL value from (tag, perm, id) entries, little-endian.
    func acl(_ entries: [(Int32, UInt16, UInt32)], version: UInt32 = UInt32(POSIX_ACL_XATTR_VERSION)) -> [UInt8] {
        var bytes = withUnsafeBytes(of: version.littleEndian, Array.init)
        for (tag, perm, id) in entries {
            bytes += withUnsafeBytes(of: UInt16(tag).littleEndian, Array.init)
            bytes += withUnsafeBytes(of: perm.littleEndian, Array.init)
            bytes += withUnsafeBytes(of: id.littleEndian, Array.init)
        }
        return bytes
    }

    let undefined = UInt32(bitPattern: ACL_UNDEFINED_ID)

    func testOnlyNamedUserAndGroupEntriesAreTranslated() throws {
        var value = acl([(ACL_USER_OBJ, 6, undefined), (ACL_USER, 4, 1001), (ACL_GROUP_OBJ, 4, undefined),
                         (ACL_GROUP, 4, 1002), (ACL_USER, 4, 77), (ACL_MASK, 6, undefined), (ACL_OTHER, 4, undefined)])
        XCTAssertTrue(try rewriteACLIDs(&value, ids: ids, toHost: true))
        XCTAssertEqual(value, acl([(ACL_USER_OBJ, 6, undefined), (ACL_USER, 4, 2001), (ACL_GROUP_OBJ, 4, undefined),
                                   (ACL_GROUP, 4, 3002), (ACL_USER, 4, 77), (ACL_MASK, 6, undefined), (ACL_OTHER, 4, undefined)]))
        XCTAssertTrue(try rewriteACLIDs(&value, ids: ids, toHost: false))
        XCTAssertEqual(value, acl([(ACL_USER_OBJ, 6, undefined), (ACL_USER, 4, 1001), (ACL_GROUP_OBJ, 4, undefined),
                                   (ACL_GROUP, 4, 1002), (ACL_USER, 4, 77), (ACL_MASK, 6, undefined), (ACL_OTHER, 4, undefined)]))
    }

    func testAForbiddenIDIsEPERMOnTheWayToTheHost() {
        var value = acl([(ACL_USER, 4, 1100)])
        XCTAssertThrowsError(try rewriteACLIDs(&value, ids: ids, toHost: true)) { error in
            XCTAssertEqual(error as? Errno, Errno.permissionDenied)
        }
    }

    func testValuesThatAreNotAWellFormedACLAreLeftToTheHostKernel() throws {
        let good = acl([(ACL_USER, 4, 1001)])
        let cases: [[UInt8]] = [
            [], [2, 0], Array(good.dropLast()), good + [0],
            acl([(ACL_USER, 4, 1001)], version: 1),
        ]
        for original in cases {
            var value = original
            XCTAssertFalse(try rewriteACLIDs(&value, ids: ids, toHost: true), "\(original)")
            XCTAssertEqual(value, original)
        }
    }

    func testRandomBytesNeverTrap() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2000 {
            let count = Int.random(in: 0...64, using: &generator)
            var value = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if count >= 4 && Bool.random(using: &generator) { value[0] = 2; value[1] = 0; value[2] = 0; value[3] = 0 }
            _ = try? rewriteACLIDs(&value, ids: ids, toHost: Bool.random(using: &generator))
        }
    }
}
