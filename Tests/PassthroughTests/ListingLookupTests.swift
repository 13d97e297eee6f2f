import XCTest
import Foundation
import Glibc
import FUSE
import Posix
@testable import Passthrough

/// READDIRPLUS and LOOKUP answer known files from one statx and new ones by opening
/// them; the host reads no more directory records than each reply can take.
final class ListingLookupTests: PassthroughTestCase {
    func testSecondListingReusesTheNodesOfTheFirst() throws {
        for i in 0..<300 { writeHostFile("k\(i)", String(repeating: "x", count: i)) }
        let first = try listDirectory(rootNodeID, plus: true, capacity: 4096)
        let second = try listDirectory(rootNodeID, plus: true, capacity: 4096)
        XCTAssertEqual(first.names, second.names)
        for (index, name) in first.names.enumerated() where name != "." && name != ".." {
            guard let a = first.entries[index], let b = second.entries[index] else { XCTFail("no entry for \(name)"); continue }
            XCTAssertEqual(a.nodeID, b.nodeID, name)
            XCTAssertEqual(lookupCount(a.nodeID), 2, "\(name): one lookup per listing")
            XCTAssertEqual(Int(b.attributes.st_size), Int(name.dropFirst())!, "\(name): its own attributes")
        }
    }

    func testAFileReplacedOnTheHostGetsANewNode() throws {
        writeHostFile("swap", "old")
        let old = try fs.lookup(root, parent: rootNodeID, name: name("swap"))
        unlink(hostPath("swap"))
        writeHostFile("swap", "newer")
        let fresh = try fs.lookup(root, parent: rootNodeID, name: name("swap"))
        XCTAssertNotEqual(old.nodeID, fresh.nodeID, "the old node still holds the old file")
        XCTAssertEqual(fresh.attributes.st_size, 5)
        let listed = try listDirectory(rootNodeID, plus: true)
        let index = try XCTUnwrap(listed.names.firstIndex(of: "swap"))
        XCTAssertEqual(listed.entries[index]?.nodeID, fresh.nodeID)
    }

    func testKnownLookupTakesALookupAndMissingNameIsENOENT() throws {
        writeHostFile("twice", "x")
        let a = try fs.lookup(root, parent: rootNodeID, name: name("twice"))
        let b = try fs.lookup(root, parent: rootNodeID, name: name("twice"))
        XCTAssertEqual(a.nodeID, b.nodeID)
        XCTAssertEqual(lookupCount(a.nodeID), 2)
        XCTAssertThrowsError(try fs.lookup(root, parent: rootNodeID, name: name("absent"))) { error in
            XCTAssertEqual(error as? Errno, .noEntry)
        }
    }

    func testShortAndLongNamesListWholeThroughSmallReplies() throws {
        var expected: Set<String> = [".", ".."]
        for i in 0..<200 {
            // One-byte names pack densest; 255-byte names need the largest records.
            let name = i % 2 == 0 ? String(UnicodeScalar(UInt8(65 + i % 50))) + "\(i)"
                                  : String(repeating: Character(UnicodeScalar(UInt8(97 + i % 26))), count: 250) + "\(i)".suffix(5)
            writeHostFile(name, "")
            expected.insert(name)
        }
        for plus in [false, true] {
            // Room for about one long record per reply, and for many short ones.
            for capacity in [440, 700, 4096] {
                let listing = try listDirectory(rootNodeID, plus: plus, capacity: capacity)
                XCTAssertEqual(listing.names.count, expected.count, "plus \(plus), capacity \(capacity): each name once")
                XCTAssertEqual(Set(listing.names), expected, "plus \(plus), capacity \(capacity)")
            }
        }
    }
}
