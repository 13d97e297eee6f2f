import Glibc
import XCTest
import XattrMap

final class MappingTests: XCTestCase {
    /// One rule set and what it does to names from each side.
    struct Case {
        var rules: String
        var client: [(String, ClientNameMapping)] = []
        var server: [(String, ServerNameMapping)] = []
        var line: UInt = #line
    }

    func check(_ cases: [Case]) throws {
        for c in cases {
            let map = try parse(c.rules)
            for (name, expected) in c.client {
                XCTAssertEqual(map.client(name), expected, "client \(name) under \(c.rules)", line: c.line)
            }
            for (name, expected) in c.server {
                XCTAssertEqual(map.server(name), expected, "server \(name) under \(c.rules)", line: c.line)
            }
        }
    }

    // Example 1 of the manual, long form and `map` form: everything the guest sets lives
    // under user.virtiofs. on the host; what the host set itself stays invisible.
    static let prefixEverything: (client: [(String, ClientNameMapping)], server: [(String, ServerNameMapping)]) = (
        client: [("trusted.overlay.opaque", .renamed("user.virtiofs.trusted.overlay.opaque")),
                 ("security.selinux", .renamed("user.virtiofs.security.selinux")),
                 ("user.comment", .renamed("user.virtiofs.user.comment")),
                 // Even the prefix itself is prefixed again, so the guest cannot reach host names.
                 ("user.virtiofs.x", .renamed("user.virtiofs.user.virtiofs.x"))],
        server: [("user.virtiofs.trusted.overlay.opaque", .renamed("trusted.overlay.opaque")),
                 ("user.virtiofs.security.selinux", .renamed("security.selinux")),
                 ("security.selinux", .hide),
                 ("user.comment", .hide),
                 ("user.virtiofs", .hide),
                 // Stripping would leave an empty name: hidden instead.
                 ("user.virtiofs.", .hide)])

    func testPrefixAllClientNamesAndHideUnprefixedHostNames() throws {
        try check([
            Case(rules: ":prefix:all::user.virtiofs.::bad:all:::",
                 client: Self.prefixEverything.client, server: Self.prefixEverything.server),
            Case(rules: ":map::user.virtiofs.:",
                 client: Self.prefixEverything.client, server: Self.prefixEverything.server),
        ])
    }

    // Example 2 of the manual, long form and `map` form: only trusted. is moved aside.
    static let prefixTrusted: (client: [(String, ClientNameMapping)], server: [(String, ServerNameMapping)]) = (
        client: [("trusted.overlay.opaque", .renamed("user.virtiofs.trusted.overlay.opaque")),
                 // The guest may not write the remapped names directly.
                 ("user.virtiofs.trusted.x", .deny(EPERM)),
                 ("user.virtiofs.", .deny(EPERM)),
                 ("user.comment", .pass),
                 ("security.selinux", .pass),
                 ("trusted", .pass)],
        server: [("user.virtiofs.trusted.overlay.opaque", .renamed("trusted.overlay.opaque")),
                 // The host's own trusted. names are not the guest's.
                 ("trusted.overlay.opaque", .hide),
                 ("user.comment", .pass),
                 ("security.selinux", .pass)])

    func testPrefixOnlyTrustedAndPassTheRest() throws {
        try check([
            Case(rules: "/prefix/all/trusted./user.virtiofs./\n/bad/server//trusted./\n/bad/client/user.virtiofs.//\n/ok/all///",
                 client: Self.prefixTrusted.client, server: Self.prefixTrusted.server),
            Case(rules: "/map/trusted./user.virtiofs./",
                 client: Self.prefixTrusted.client, server: Self.prefixTrusted.server),
        ])
    }

    func testBadAllHidesAndRefusesSecurityNames() throws {
        try check([Case(rules: "/bad/all/security./security./ /ok/all///",
                        client: [("security.selinux", .deny(EPERM)), ("security.", .deny(EPERM)),
                                 ("user.a", .pass), ("securityx", .pass)],
                        server: [("security.selinux", .hide), ("security.capability", .hide),
                                 ("user.a", .pass), ("trusted.a", .pass)])])
    }

    func testBadRefusesWithEPERMAndUnsupportedWithENOTSUP() throws {
        try check([Case(rules: "/unsupported/all/security.selinux/security.selinux/ /bad/all/trusted./trusted./ /ok/all///",
                        client: [("security.selinux", .deny(ENOTSUP)), ("trusted.a", .deny(EPERM)),
                                 ("security.ima", .pass)],
                        server: [("security.selinux", .hide), ("trusted.a", .hide), ("security.ima", .pass)])])
        // The hard-coded values must be Linux's.
        XCTAssertEqual(ENOTSUP, 95)
        XCTAssertEqual(EPERM, 1)
    }

    func testFirstMatchingRuleWins() throws {
        try check([
            Case(rules: ":ok:client:user.:: :bad:client:user.:: :bad:all:::",
                 client: [("user.a", .pass), ("trusted.a", .deny(EPERM))]),
            Case(rules: ":bad:client:user.:: :ok:client:user.:: :ok:all:::",
                 client: [("user.a", .deny(EPERM)), ("trusted.a", .pass)]),
            Case(rules: ":prefix:all:user.a:x.: :prefix:all:user.:y.: :ok:all:::",
                 client: [("user.abc", .renamed("x.user.abc")), ("user.b", .renamed("y.user.b"))],
                 server: [("x.user.abc", .renamed("user.abc")), ("y.user.b", .renamed("user.b"))]),
            Case(rules: ":ok:server::security.: :bad:server::security.: :bad:all:::",
                 server: [("security.selinux", .pass), ("user.a", .hide)]),
        ])
    }

    func testScopeLimitsWhichSideARuleSees() throws {
        try check([
            Case(rules: ":bad:client:user.:: :ok:all:::",
                 client: [("user.a", .deny(EPERM))], server: [("user.a", .pass)]),
            Case(rules: ":bad:server::user.: :ok:all:::",
                 client: [("user.a", .pass)], server: [("user.a", .hide)]),
            Case(rules: ":prefix:client:trusted.:user.vm.: :ok:all:::",
                 client: [("trusted.a", .renamed("user.vm.trusted.a"))],
                 server: [("user.vm.trusted.a", .pass)]),
            Case(rules: ":prefix:server::user.vm.: :ok:all:::",
                 client: [("trusted.a", .pass)],
                 server: [("user.vm.trusted.a", .renamed("trusted.a"))]),
        ])
    }

    func testServerSideMatchesOnPrependNotKey() throws {
        try check([Case(rules: ":prefix:all:trusted.:user.virtiofs.: :ok:all:::",
                        server: [("trusted.a", .pass),
                                 ("user.virtiofs.trusted.a", .renamed("trusted.a")),
                                 // Matched on prepend alone, whatever followed it.
                                 ("user.virtiofs.other", .renamed("other"))])])
    }

    func testEmptyPrependPrefixChangesNothing() throws {
        try check([Case(rules: ":prefix:all::: ", client: [("user.a", .pass)], server: [("user.a", .pass)])])
    }

    func testKeyLongerThanNameDoesNotMatch() throws {
        try check([Case(rules: ":bad:all:user.long:user.long: :ok:all:::",
                        client: [("user.", .pass), ("user.longer", .deny(EPERM))],
                        server: [("user.", .pass), ("user.longer", .hide)])])
    }

    func testNamesAreBytesNotText() throws {
        let map = try parse(":map::user.vm.:")
        let raw: [UInt8] = [0xFF, 0xFE, 0x80]
        XCTAssertEqual(map.client(raw), .rename(bytes("user.vm.") + raw))
        XCTAssertEqual(map.server(bytes("user.vm.") + raw), .rename(raw))
        XCTAssertEqual(map.client([UInt8]()), .rename(bytes("user.vm.")))
    }

    // MARK: listxattr

    func testListingIsRenamedAndFilteredInHostOrder() throws {
        let map = try parse("/map/trusted./user.virtiofs./")
        let host = nulList(["user.virtiofs.trusted.b", "trusted.host", "user.c", "security.selinux",
                            "user.virtiofs.trusted.a"])
        let (guest, size) = map.listing(host)
        XCTAssertEqual(guest, nulList(["trusted.b", "user.c", "security.selinux", "trusted.a"]))
        XCTAssertEqual(size, guest.count)
        XCTAssertEqual(size, host.count - "trusted.host".utf8.count - 1 - 2 * "user.virtiofs.".utf8.count)
    }

    func testListingWithEverythingPrefixed() throws {
        let map = try parse(":map::user.virtiofs.:")
        let (guest, size) = map.listing(nulList(["user.virtiofs.trusted.a", "user.plain", "security.selinux",
                                                 "user.virtiofs.security.selinux", "user.virtiofs."]))
        XCTAssertEqual(guest, nulList(["trusted.a", "security.selinux"]))
        XCTAssertEqual(size, 10 + 17)
    }

    func testListingWithEveryNameHiddenIsEmpty() throws {
        let map = try parse(":map::user.virtiofs.:")
        let (guest, size) = map.listing(nulList(["security.selinux", "user.a"]))
        XCTAssertEqual(guest, [])
        XCTAssertEqual(size, 0)
    }

    func testEmptyHostListingGivesEmptyGuestListing() throws {
        let map = try parse(":ok:all:::")
        XCTAssertEqual(map.listing([]).list, [])
        XCTAssertEqual(map.listing([]).size, 0)
        var guest: [UInt8] = [1, 2, 3]
        map.filterListing(UnsafeRawBufferPointer(start: nil, count: 0), into: &guest)
        XCTAssertEqual(guest, [])
        XCTAssertEqual(map.filteredListingSize(UnsafeRawBufferPointer(start: nil, count: 0)), 0)
    }

    func testListingReplacesTheBufferRatherThanAppending() throws {
        let map = try parse(":ok:all:::")
        let (guest, _) = map.listing(nulList(["user.a"]), reusing: Array(repeating: 0x41, count: 64))
        XCTAssertEqual(guest, nulList(["user.a"]))
    }

    func testListingDropsEmptyEntriesAndAcceptsAnUnterminatedLastName() throws {
        let map = try parse(":ok:all:::")
        let host: [UInt8] = [0] + bytes("user.a") + [0, 0] + bytes("user.b")
        let (guest, size) = map.listing(host)
        XCTAssertEqual(guest, nulList(["user.a", "user.b"]))
        XCTAssertEqual(size, guest.count)
    }

    func testListingNeverGrowsAndSizeAgreesForEveryDocumentedExample() throws {
        let host = nulList(["trusted.a", "user.virtiofs.trusted.a", "user.virtiofs.x", "security.selinux",
                            "user.a", "user.virtiofs.", "system.posix_acl_access"])
        for (text, _) in ParserTests.documentedExamples {
            let map = try parse(text)
            let (guest, size) = map.listing(host)
            XCTAssertLessThanOrEqual(guest.count, host.count, text)
            XCTAssertEqual(size, guest.count, text)
            // The listing agrees name by name with mapServerName.
            var expected: [UInt8] = []
            for name in host.split(separator: 0) {
                switch map.server(Array(name)) {
                case .pass: expected += name + [0]
                case .rename(let guestName): expected += guestName + [0]
                case .hide: break
                }
            }
            XCTAssertEqual(guest, expected, text)
        }
    }
}
