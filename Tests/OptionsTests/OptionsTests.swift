@testable import Options
import XattrMap
import XCTest

/// The option model: its defaults, the rules tying options together, and the value syntaxes
/// both the parser and the sandbox use.
final class OptionsTests: XCTestCase {
    func testDaemonDefaultsAnnounceSubmountsAndKillprivV2() {
        // The defaults the daemon has always run with; the backend now reads the same ones.
        let o = FileSystemOptions()
        XCTAssertTrue(o.announceSubmounts)
        XCTAssertTrue(o.killprivV2)
        XCTAssertEqual(o.cache, .auto)
        XCTAssertEqual(o.inodeFileHandles, .never)
        XCTAssertEqual(DaemonOptions().fileSystem, o)
    }

    func testTimeoutFollowsTheCacheModeUnlessGiven() {
        var o = FileSystemOptions()
        for (mode, seconds) in [(CacheMode.never, 0.0), (.metadata, 86400), (.auto, 1), (.always, 86400)] {
            o.cache = mode
            XCTAssertEqual(o.effectiveTimeout, seconds, "\(mode)")
        }
        o.timeout = 2.5
        XCTAssertEqual(o.effectiveTimeout, 2.5)
    }

    func testReaddirplusIsOffWithCacheNeverUnlessAskedFor() {
        var o = FileSystemOptions()
        XCTAssertTrue(o.readdirplusEnabled)
        o.cache = .never
        XCTAssertFalse(o.readdirplusEnabled)
        o.readdirplus = true
        XCTAssertTrue(o.readdirplusEnabled)
    }

    func testXattrIsImpliedByACLsLabelsAndMaps() throws {
        XCTAssertFalse(FileSystemOptions().xattrEnabled)
        var a = FileSystemOptions(); a.posixACL = true
        var b = FileSystemOptions(); b.securityLabel = true
        var c = FileSystemOptions(); c.xattrMap = try XattrMap(rules: ":ok:all:::")
        XCTAssertTrue(a.xattrEnabled && b.xattrEnabled && c.xattrEnabled)
    }

    func testCacheSpellingsIncludeTheOldNone() {
        XCTAssertEqual(CacheMode(option: "none"), .never)
        XCTAssertEqual(CacheMode(option: "metadata"), .metadata)
        XCTAssertNil(CacheMode(option: "sometimes"))
        XCTAssertNil(CacheMode(option: "Auto"))
    }

    func testDaemonOptionsReadFileSystemFieldsDirectly() {
        var o = DaemonOptions()
        o.cache = .always
        o.posixLocks = true
        XCTAssertEqual(o.fileSystem.cache, .always)
        XCTAssertTrue(o.fileSystem.posixLocks)
        XCTAssertEqual(o.effectiveTimeout, 86400)
    }

    func testLogLevelsOrderMostSevereFirst() {
        XCTAssertLessThan(LogLevel.error, .warning)
        XCTAssertLessThan(LogLevel.info, .trace)
        XCTAssertEqual(LogLevel.spellings.first { $0.0 == "warn" }?.1, .warning)
    }

    func testCapabilityListParsesAddsAndDrops() {
        XCTAssertEqual(CapabilityChange.parseList("+sys_admin:-CHOWN:+cap_fowner"),
                       [CapabilityChange(add: true, name: "sys_admin"),
                        CapabilityChange(add: false, name: "chown"),
                        CapabilityChange(add: true, name: "fowner")])
        XCTAssertEqual(CapabilityChange.parseList(""), [])
    }

    func testCapabilityListRefusesItemsWithoutSignOrName() {
        for bad in ["sys_admin", "+", "+sys_admin::-chown", "+sys admin", "-cap_"] {
            XCTAssertNil(CapabilityChange.parseList(bad), bad)
        }
    }

    func testIDMapParses() throws {
        XCTAssertEqual(try IDMap(parsing: ":0:1000:1:"), IDMap(inside: 0, outside: 1000, count: 1))
        XCTAssertEqual(try IDMap(parsing: ":0:100000:65536:").mapFileLine, "0 100000 65536\n")
        XCTAssertEqual(try IDMap(parsing: ":4294967294:0:1:").inside, 4294967294)
    }

    func testMalformedIDMapsAreRejectedNamingTheText() {
        for bad in ["0:1000:1", ":0:1000:", ":a:1:1:", ":0:1:0:", ":1:2:3:4:", "::", "", ":-1:0:1:",
                    ":4294967295:0:1:", ":0:4294967290:10:", ":99999999999:0:1:", ":1:0:4294967295:"] {
            XCTAssertThrowsError(try IDMap(parsing: bad), bad) { error in
                XCTAssertEqual((error as? IDMapError)?.text, bad)
            }
        }
    }

    func testDecimalValueRefusesWhatIsNotAWholeNumberThatFits() {
        XCTAssertEqual(decimalValue(Array("18446744073709551615".utf8)), UInt64.max)
        XCTAssertNil(decimalValue(Array("18446744073709551616".utf8)))
        XCTAssertNil(decimalValue(Array("".utf8)))
        XCTAssertNil(decimalValue(Array("-1".utf8)))
    }
}
