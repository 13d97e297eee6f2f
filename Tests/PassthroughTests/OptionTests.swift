import XCTest
import Foundation
import Glibc
import CVirtioFS
import FUSE
import Posix
import XattrMap
import Options
@testable import Passthrough

/// Stands in for the rule engine: guest "user.X" is stored as "user.virtiofs.X" on the host,
/// "security.capability" as "user.virtiofs.security.capability", host "user.hidden*" is never shown,
/// and "trusted.*" is refused.
struct PrefixMapping: XattrNameMapping {
    static let prefix = Array("user.virtiofs.".utf8)

    func mapClientName(_ name: UnsafeBufferPointer<UInt8>) -> ClientNameMapping {
        if name.starts(with: "trusted.".utf8) { return .deny(EPERM) }
        if name.starts(with: "user.".utf8) { return .rename(Self.prefix + name.dropFirst(5)) }
        if name.elementsEqual("security.capability".utf8) { return .rename(Self.prefix + Array(name)) }
        return .pass
    }

    func mapServerName(_ name: UnsafeBufferPointer<UInt8>) -> ServerNameMapping {
        if name.starts(with: "user.hidden".utf8) { return .hide }
        if name.starts(with: Self.prefix) {
            let rest = Array(name.dropFirst(Self.prefix.count))
            if rest.starts(with: "security.".utf8) { return .rename(rest) }
            return .rename(Array("user.".utf8) + rest)
        }
        return .pass
    }
}

final class OptionTests: PassthroughTestCase {
    func run(_ tool: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    func hostXattr(_ relative: String, _ key: String) -> String? {
        var buffer = [UInt8](repeating: 0, count: 256)
        let n = cvfs_getxattr(hostPath(relative), key, &buffer, buffer.count)
        return n < 0 ? nil : String(decoding: buffer[0..<n], as: UTF8.self)
    }

    func mappedFileSystem() throws -> PassthroughFileSystem {
        var configuration = PassthroughConfiguration(root: directory)
        configuration.xattr = true
        return try PassthroughFileSystem(configuration: configuration, logger: .discarding, xattrNames: PrefixMapping())
    }

    func testXattrMapRenamesHidesAndDeniesAndRecomputesListSizes() throws {
        writeHostFile("m", "x")
        XCTAssertEqual(cvfs_setxattr(hostPath("m"), "user.hidden.secret", "s", 1, 0), 0)
        XCTAssertEqual(cvfs_setxattr(hostPath("m"), "user.plain", "p", 1, 0), 0)
        fs = try mappedFileSystem()
        let node = try fs.lookup(root, parent: rootNodeID, name: name("m")).nodeID
        let value = Array("blue".utf8)
        try value.withUnsafeBytes { try fs.setxattr(root, node: node, name: name("user.colour"), value: $0, flags: 0, extFlags: 0) }
        XCTAssertEqual(hostXattr("m", "user.virtiofs.colour"), "blue", "stored under the mapped name")
        XCTAssertNil(hostXattr("m", "user.colour"))
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = try buffer.withUnsafeMutableBytes { try fs.getxattr(root, node: node, name: name("user.colour"), into: $0) }
        XCTAssertEqual(String(decoding: buffer[0..<n], as: UTF8.self), "blue")
        assertErrno(.permissionDenied) {
            try value.withUnsafeBytes { try fs.setxattr(root, node: node, name: name("trusted.x"), value: $0, flags: 0, extFlags: 0) }
        }
        // The listing shows guest names only, and its size is the size after filtering.
        let size = try fs.listxattr(root, node: node, into: nil)
        var list = [UInt8](repeating: 0, count: size)
        let listed = try list.withUnsafeMutableBytes { try fs.listxattr(root, node: node, into: $0) }
        XCTAssertEqual(listed, size)
        let names = Set(list[0..<listed].split(separator: 0).map { String(decoding: $0, as: UTF8.self) })
        XCTAssertEqual(names, ["user.colour", "user.plain"], "user.plain passes; the hidden one is gone")
        XCTAssertEqual(size, "user.colour\0user.plain\0".utf8.count)
        var short = [UInt8](repeating: 0, count: size - 1)
        assertErrno(.range) { try short.withUnsafeMutableBytes { try fs.listxattr(root, node: node, into: $0) } }
        try fs.removexattr(root, node: node, name: name("user.colour"))
        XCTAssertNil(hostXattr("m", "user.virtiofs.colour"))
    }

    func testTheRealRuleEngineKeepsHostSecurityNamesAway() throws {
        let rules = ":prefix:all:trusted.:user.virtiofs.: :prefix:all:security.:user.virtiofs.: :bad:server::trusted.: :bad:server::security.: :bad:client:user.virtiofs.:: :ok:all:::"
        var configuration = PassthroughConfiguration(root: directory)
        configuration.xattr = true
        configuration.xattrMap = try XattrMap(rules: rules)
        fs = try PassthroughFileSystem(configuration: configuration, logger: .discarding)
        writeHostFile("f", "x")
        XCTAssertEqual(cvfs_setxattr(hostPath("f"), "trusted.host", "h", 1, 0), 0)
        let node = try fs.lookup(root, parent: rootNodeID, name: name("f")).nodeID
        let value = Array("g".utf8)
        try value.withUnsafeBytes { try fs.setxattr(root, node: node, name: name("security.capability"), value: $0, flags: 0, extFlags: 0) }
        try value.withUnsafeBytes { try fs.setxattr(root, node: node, name: name("user.plain"), value: $0, flags: 0, extFlags: 0) }
        XCTAssertEqual(hostXattr("f", "user.virtiofs.security.capability"), "g")
        XCTAssertNil(hostXattr("f", "security.capability"))
        // The guest cannot reach the target name space directly: EPERM to change, "no such attribute" to read.
        assertErrno(.permissionDenied) {
            try value.withUnsafeBytes { try fs.setxattr(root, node: node, name: name("user.virtiofs.x"), value: $0, flags: 0, extFlags: 0) }
        }
        assertErrno(.noData) { try fs.getxattr(root, node: node, name: name("user.virtiofs.security.capability"), into: nil) }
        let size = try fs.listxattr(root, node: node, into: nil)
        var list = [UInt8](repeating: 0, count: size)
        let n = try list.withUnsafeMutableBytes { try fs.listxattr(root, node: node, into: $0) }
        let names = Set(list[0..<n].split(separator: 0).map { String(decoding: $0, as: UTF8.self) })
        XCTAssertEqual(names, ["security.capability", "user.plain"], "the host's trusted.host is hidden")
        // The host kernel no longer drops the renamed capability on write: we do.
        let handle = try fs.open(root, node: node, flags: UInt32(O_RDWR), killSuidGid: false).handle
        _ = try write(node, handle, "w")
        XCTAssertNil(hostXattr("f", "user.virtiofs.security.capability"))
    }

    func testRemappedCapabilityIsDroppedOnWriteTruncateAndChown() throws {
        fs = try mappedFileSystem()
        writeHostFile("cap", "x")
        let node = try fs.lookup(root, parent: rootNodeID, name: name("cap")).nodeID
        let capability = "security.capability"
        func setCapability() throws {
            let value = Array("cap".utf8)
            try value.withUnsafeBytes { try fs.setxattr(root, node: node, name: name(capability), value: $0, flags: 0, extFlags: 0) }
            XCTAssertEqual(hostXattr("cap", "user.virtiofs.security.capability"), "cap")
        }
        try setCapability()
        let handle = try fs.open(root, node: node, flags: UInt32(O_RDWR), killSuidGid: false).handle
        _ = try write(node, handle, "y")
        XCTAssertNil(hostXattr("cap", "user.virtiofs.security.capability"), "write drops it")
        try setCapability()
        var truncate = SetAttributes(valid: .size)
        truncate.size = 0
        _ = try fs.setattr(root, node: node, truncate)
        XCTAssertNil(hostXattr("cap", "user.virtiofs.security.capability"), "truncate drops it")
        try setCapability()
        var chown = SetAttributes(valid: .uid)
        chown.uid = 7
        _ = try fs.setattr(root, node: node, chown)
        XCTAssertNil(hostXattr("cap", "user.virtiofs.security.capability"), "chown drops it")
    }

    func testSecurityContextIsSetOnNewNodes() throws {
        fs = try makeFileSystem { $0.securityLabel = true }
        var extras = CreateExtras()
        extras.securityContextName = name("security.vfstest")
        let label = Array("label_t".utf8)
        try label.withUnsafeBytes { bytes in
            extras.securityContextValue = bytes
            _ = try fs.create(root, parent: rootNodeID, name: name("labelled"), mode: S_IFREG | 0o644, flags: UInt32(O_RDWR), extras: extras)
            _ = try fs.mkdir(root, parent: rootNodeID, name: name("labelled-dir"), mode: 0o755, extras: extras)
            _ = try fs.symlink(root, target: name("x"), parent: rootNodeID, name: name("labelled-link"), extras: extras)
        }
        XCTAssertEqual(hostXattr("labelled", "security.vfstest"), "label_t")
        XCTAssertEqual(hostXattr("labelled-dir", "security.vfstest"), "label_t")
        // On the link itself (its target "x" does not exist).
        XCTAssertEqual(try run("/usr/bin/getfattr", ["-h", "-n", "security.vfstest", hostPath("labelled-link")]), 0)
    }

    func testDontMaskAppliesTheGuestUmaskUnlessTheParentHasADefaultACL() throws {
        fs = try makeFileSystem { $0.posixACL = true }
        let flags = try fs.initialize(capable: InitFlags(rawValue: UInt64.max))
        XCTAssertTrue(flags.contains(.dontMask))
        XCTAssertTrue(flags.contains(.posixACL))
        var extras = CreateExtras()
        extras.umask = 0o022
        let plain = try fs.mkdir(root, parent: rootNodeID, name: name("plain"), mode: 0o777, extras: extras)
        XCTAssertEqual(plain.attributes.st_mode & 0o777, 0o755, "the guest's umask applied by us")
        XCTAssertEqual(try run("/usr/bin/setfacl", ["-d", "-m", "u::rwx,g::rwx,o::rwx", hostPath("plain")]), 0)
        let inherited = try fs.mkdir(root, parent: plain.nodeID, name: name("inner"), mode: 0o777, extras: extras)
        XCTAssertEqual(inherited.attributes.st_mode & 0o777, 0o777, "the default ACL replaces the umask")
    }

    func testAllowMmapAsksForSharedMappingsOfDirectIOFilesOnlyWhenSetAndOffered() throws {
        fs = try makeFileSystem { $0.cache = .never }
        XCTAssertFalse(try fs.initialize(capable: InitFlags(rawValue: UInt64.max)).contains(.directIOAllowMmap))
        fs = try makeFileSystem { $0.cache = .never; $0.allowMmap = true }
        XCTAssertTrue(try fs.initialize(capable: InitFlags(rawValue: UInt64.max)).contains(.directIOAllowMmap))
        // An older guest does not offer it: nothing is asked for.
        let old = InitFlags(rawValue: UInt64.max).subtracting(.directIOAllowMmap)
        XCTAssertFalse(try fs.initialize(capable: old).contains(.directIOAllowMmap))
    }

    func testSubmountRootsAreFlagged() throws {
        fs = try makeFileSystem { $0.announceSubmounts = true }
        mkdir(hostPath("mnt"), 0o755)
        mkdir(hostPath("plain"), 0o755)
        guard try run("/bin/mount", ["-t", "tmpfs", "tmpfs", hostPath("mnt")]) == 0 else {
            throw XCTSkip("cannot mount here")
        }
        defer { _ = try? run("/bin/umount", [hostPath("mnt")]) }
        let mnt = try fs.lookup(root, parent: rootNodeID, name: name("mnt"))
        let plain = try fs.lookup(root, parent: rootNodeID, name: name("plain"))
        XCTAssertEqual(fs.attributeFlags(for: mnt.nodeID), UInt32(FUSE_ATTR_SUBMOUNT))
        XCTAssertEqual(mnt.attributeFlags, UInt32(FUSE_ATTR_SUBMOUNT))
        XCTAssertEqual(plain.attributeFlags, 0)
        XCTAssertEqual(fs.attributeFlags(for: plain.nodeID), 0)
        XCTAssertTrue(try fs.initialize(capable: InitFlags(rawValue: UInt64.max)).contains(.submounts))
        XCTAssertEqual(fs.inodes.mountFDs.withLock { $0.count }, 2, "syncfs covers the root's mount and the submount")
        XCTAssertNoThrow(try fs.syncfs(root, node: plain.nodeID))
        fs.forget(mnt.nodeID, count: 1)
        fs = nil // release the mount's descriptors before unmounting
    }

    func testDirectIOIsStrippedUnlessAllowed() throws {
        writeHostFile("d", String(repeating: "z", count: 4096))
        let node = try fs.lookup(root, parent: rootNodeID, name: name("d")).nodeID
        let handle = try fs.open(root, node: node, flags: UInt32(O_RDONLY | CVFS_O_DIRECT), killSuidGid: false).handle
        let fd = fs.handles.withLock { $0.files[handle]?.fd } ?? -1
        XCTAssertEqual(fcntl(fd, F_GETFL) & CVFS_O_DIRECT, 0)
        fs = try makeFileSystem { $0.allowDirectIO = true }
        let node2 = try fs.lookup(root, parent: rootNodeID, name: name("d")).nodeID
        let handle2 = try fs.open(root, node: node2, flags: UInt32(O_RDONLY | CVFS_O_DIRECT), killSuidGid: false).handle
        let fd2 = fs.handles.withLock { $0.files[handle2]?.fd } ?? -1
        XCTAssertNotEqual(fcntl(fd2, F_GETFL) & CVFS_O_DIRECT, 0)
    }

    func testReusedInodeNumberBehindAHandleIsANewNode() throws {
        fs = try makeFileSystem { $0.inodeFileHandles = .mandatory }
        writeHostFile("old", "1")
        let old = try fs.lookup(root, parent: rootNodeID, name: name("old"))
        unlink(hostPath("old"))
        // Make files until one reuses the freed inode number (ext4 usually does at once).
        var reused: String? = nil
        for i in 0..<64 {
            writeHostFile("new\(i)", "2")
            if hostStat("new\(i)").st_ino == old.attributes.st_ino { reused = "new\(i)"; break }
        }
        guard let reused else { throw XCTSkip("the filesystem did not reuse the inode number") }
        let fresh = try fs.lookup(root, parent: rootNodeID, name: name(reused))
        XCTAssertNotEqual(fresh.nodeID, old.nodeID, "a different file is a different node")
        assertErrno(.stale) { try fs.getattr(root, node: old.nodeID, handle: nil) }
    }
}
