import XCTest
import Foundation
import Synchronization
import Glibc
import CVirtioFS
import FUSE
import Posix
@testable import Passthrough

/// The passthrough backend, behind the real dispatcher, with its system calls
/// failing (ENOSPC, EIO, EMFILE, ENOMEM), interrupted (EINTR) or coming up short,
/// one wrapper at a time, through the debug-build hook in Posix. For every fault:
/// each reply is a success or a real errno (the injected one where the call was
/// the request's own), the inode table's lookup counts match the entries the
/// replies handed out, forgetting and releasing them leaves no node, handle or
/// descriptor behind, and the backend then serves a normal request.
final class FaultInjectionTests: PassthroughTestCase {
    /// Faults that replace a call: failures, and EINTR (which the wrappers retry).
    static let failures: [(String, InjectedFault)] = [
        ("ENOSPC", .fail(Errno(ENOSPC))), ("EIO", .fail(Errno(EIO))), ("EMFILE", .fail(Errno(EMFILE))),
        ("ENOMEM", .fail(Errno(ENOMEM))), ("EINTR", .interrupt),
    ]
    /// Wrappers whose result is a byte count a kernel may legitimately cut short.
    static let countingWrappers: Set<String> = ["read", "write", "preadv", "pwritev", "getdents64", "readlinkat",
                                                "fgetxattr", "getxattr", "flistxattr", "listxattr", "copyFileRange"]

    // MARK: a small FUSE client over the dispatcher

    final class Client {
        let server: Server<PassthroughFileSystem>
        var unique: UInt64 = 10
        /// Lookups the replies handed out, per node (what the kernel would later FORGET).
        var granted: [UInt64: UInt64] = [:]
        /// Handles the replies handed out, with their node and whether they are directories.
        var handles: [(node: UInt64, fh: UInt64, directory: Bool)] = []
        /// Every reply's error, in order, with the opcode.
        var errors: [(Opcode, Int32)] = []

        init(_ fs: PassthroughFileSystem) {
            server = Server(filesystem: fs, options: ServerOptions(), logger: .discarding)
            var arg = fuse_init_in()
            arg.major = 7
            arg.minor = 38
            arg.max_readahead = 131072
            arg.flags = 0x7FFF_FFFF
            arg.flags2 = 0xF
            _ = send(.initialize, node: 0, raw(arg), record: false)
        }

        func raw<T>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }
        func name(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

        /// Sends one request; returns the reply's error and payload.
        @discardableResult
        func send(_ opcode: Opcode, node: UInt64, _ parts: [UInt8]..., record: Bool = true) -> (Int32, [UInt8]) {
            let body = parts.flatMap { $0 }
            var h = fuse_in_header()
            h.len = UInt32(40 + body.count)
            h.opcode = opcode.rawValue
            h.unique = unique
            h.nodeid = node
            unique += 1
            let request = raw(h) + body
            let reply = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 18, alignment: 16)
            defer { reply.deallocate() }
            let length = request.withUnsafeBytes { bytes -> Int in
                var reader = FUSE.MemoryReader(bytes)
                var writer = FUSE.MemoryWriter(reply)
                return server.handle(&reader, &writer)
            }
            guard length >= 16 else { return (0, []) }
            let out = reply.loadUnaligned(as: fuse_out_header.self)
            if record { errors.append((opcode, out.error)) }
            return (out.error, Array(reply[16..<length]))
        }

        /// Sends an entry-creating request; records the lookup it grants.
        func entry(_ opcode: Opcode, node: UInt64, _ parts: [UInt8]...) -> UInt64? {
            let (error, payload) = send(opcode, node: node, parts.flatMap { $0 })
            guard error == 0, payload.count >= MemoryLayout<fuse_entry_out>.size else { return nil }
            let e = payload.withUnsafeBytes { $0.loadUnaligned(as: fuse_entry_out.self) }
            guard e.nodeid != 0 else { return nil }
            granted[e.nodeid, default: 0] += 1
            return e.nodeid
        }

        func lookup(_ parent: UInt64, _ n: String) -> UInt64? { entry(.lookup, node: parent, name(n)) }

        func open(_ node: UInt64, flags: Int32, directory: Bool = false) -> UInt64? {
            var a = fuse_open_in()
            a.flags = UInt32(bitPattern: flags)
            let (error, payload) = send(directory ? .opendir : .open, node: node, raw(a))
            guard error == 0, payload.count >= MemoryLayout<fuse_open_out>.size else { return nil }
            let fh = payload.withUnsafeBytes { $0.loadUnaligned(as: fuse_open_out.self) }.fh
            handles.append((node, fh, directory))
            return fh
        }

        func create(_ parent: UInt64, _ n: String) -> (UInt64, UInt64)? {
            var c = fuse_create_in()
            c.flags = UInt32(O_RDWR | O_CREAT)
            c.mode = S_IFREG | 0o644
            let (error, payload) = send(.create, node: parent, raw(c), name(n))
            let size = MemoryLayout<fuse_entry_out>.size
            guard error == 0, payload.count >= size + MemoryLayout<fuse_open_out>.size else { return nil }
            let e = payload.withUnsafeBytes { $0.loadUnaligned(as: fuse_entry_out.self) }
            let o = payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: size, as: fuse_open_out.self) }
            granted[e.nodeid, default: 0] += 1
            handles.append((e.nodeid, o.fh, false))
            return (e.nodeid, o.fh)
        }

        func read(_ node: UInt64, _ fh: UInt64, size: UInt32 = 4096, opcode: Opcode = .read) -> (Int32, [UInt8]) {
            var r = fuse_read_in()
            r.fh = fh
            r.size = size
            return send(opcode, node: node, raw(r))
        }

        func write(_ node: UInt64, _ fh: UInt64, _ data: [UInt8], at offset: UInt64 = 0) -> (Int32, [UInt8]) {
            var w = fuse_write_in()
            w.fh = fh
            w.offset = offset
            w.size = UInt32(data.count)
            return send(.write, node: node, raw(w), data)
        }

        /// Releases every handle and forgets every lookup the replies handed out.
        func cleanUp() {
            for h in handles {
                var r = fuse_release_in()
                r.fh = h.fh
                send(h.directory ? .releasedir : .release, node: h.node, raw(r), record: false)
            }
            handles = []
            for (node, count) in granted {
                send(.forget, node: node, raw(fuse_forget_in(nlookup: count)), record: false)
            }
            granted = [:]
        }
    }

    // MARK: the scenarios

    /// Every scenario starts from this tree (see `resetTree`).
    func resetTree() {
        _ = try? FileManager.default.contentsOfDirectory(atPath: directory).forEach {
            try? FileManager.default.removeItem(atPath: hostPath($0))
        }
        writeHostFile("data.txt", String(repeating: "0123456789", count: 1000))
        writeHostFile("probe.txt", "still serving")
        try? FileManager.default.createDirectory(atPath: hostPath("dir"), withIntermediateDirectories: true)
        writeHostFile("dir/inner.txt", "inner")
        symlink("data.txt", hostPath("link"))
        _ = Array("blue".utf8).withUnsafeBytes { try? Sys.setxattr(hostPath("data.txt"), "user.color", $0, flags: 0) }
    }

    typealias Scenario = (Client) -> Void

    static var scenarios: [(String, Scenario)] { [
        ("lookup-read", { c in
            guard let node = c.lookup(1, "data.txt"), let fh = c.open(node, flags: O_RDONLY) else { return }
            _ = c.read(node, fh)
            if let link = c.lookup(1, "link") { c.send(.readlink, node: link) }
            c.send(.getattr, node: node, c.raw(fuse_getattr_in()))
        }),
        ("create-write-fsync", { c in
            guard let (node, fh) = c.create(1, "new.txt") else { return }
            _ = c.write(node, fh, Array(repeating: 0x41, count: 10000))
            var s = fuse_fsync_in()
            s.fh = fh
            c.send(.fsync, node: node, c.raw(s))
            var f = fuse_fallocate_in()
            f.fh = fh
            f.length = 65536
            c.send(.fallocate, node: node, c.raw(f))
            var a = fuse_setattr_in()
            a.valid = 8 // FATTR_SIZE
            a.size = 100
            c.send(.setattr, node: node, c.raw(a))
        }),
        ("namespace", { c in
            var m = fuse_mkdir_in()
            m.mode = 0o755
            guard let dir = c.entry(.mkdir, node: 1, c.raw(m), c.name("made")) else { return }
            _ = c.entry(.symlink, node: dir, c.name("sl"), c.name("../data.txt"))
            var n = fuse_mknod_in()
            n.mode = S_IFIFO | 0o644
            _ = c.entry(.mknod, node: dir, c.raw(n), c.name("fifo"))
            if let data = c.lookup(1, "data.txt") {
                var l = fuse_link_in()
                l.oldnodeid = data
                _ = c.entry(.link, node: dir, c.raw(l), c.name("hard"))
            }
            var r = fuse_rename_in()
            r.newdir = 1
            c.send(.rename, node: dir, c.raw(r), c.name("hard"), c.name("moved"))
            c.send(.unlink, node: 1, c.name("moved"))
            c.send(.unlink, node: dir, c.name("sl"))
            c.send(.unlink, node: dir, c.name("fifo"))
            c.send(.rmdir, node: 1, c.name("made"))
        }),
        ("readdir", { c in
            guard let fh = c.open(1, flags: O_RDONLY | O_DIRECTORY, directory: true) else { return }
            _ = c.read(1, fh, size: 4096, opcode: .readdir)
            // READDIRPLUS hands out a lookup per entry but "." and "..".
            let (rootError, rootPayload) = c.read(1, fh, size: 4096, opcode: .readdirplus)
            if rootError == 0 { FaultInjectionTests.grantedByReaddirplus(rootPayload, c) }
            if let dir = c.lookup(1, "dir"), let sub = c.open(dir, flags: O_RDONLY | O_DIRECTORY, directory: true) {
                let (error, payload) = c.read(dir, sub, size: 8192, opcode: .readdirplus)
                if error == 0 { FaultInjectionTests.grantedByReaddirplus(payload, c) }
            }
        }),
        ("xattr-statfs", { c in
            guard let node = c.lookup(1, "data.txt") else { return }
            var s = fuse_setxattr_in()
            s.size = 3
            c.send(.setxattr, node: node, c.raw(s), c.name("user.a"), Array("abc".utf8))
            var g = fuse_getxattr_in()
            g.size = 64
            c.send(.getxattr, node: node, c.raw(g), c.name("user.color"))
            c.send(.listxattr, node: node, c.raw(g))
            c.send(.removexattr, node: node, c.name("user.a"))
            c.send(.statfs, node: 1)
        }),
        ("copy-lseek", { c in
            guard let node = c.lookup(1, "data.txt"), let fh = c.open(node, flags: O_RDWR) else { return }
            var cp = fuse_copy_file_range_in()
            cp.fh_in = fh
            cp.fh_out = fh
            cp.off_out = 20000
            cp.len = 100
            cp.nodeid_out = node
            c.send(.copyFileRange, node: node, c.raw(cp))
            var l = fuse_lseek_in()
            l.fh = fh
            l.whence = 3 // SEEK_DATA
            c.send(.lseek, node: node, c.raw(l))
        }),
    ] }

    /// Counts the lookups a READDIRPLUS reply hands out (every entry with a node id but . and ..).
    static func grantedByReaddirplus(_ payload: [UInt8], _ c: Client) {
        var offset = 0
        let entrySize = MemoryLayout<fuse_entry_out>.size
        while offset + entrySize + 24 <= payload.count {
            let e = payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: fuse_entry_out.self) }
            let nameLength = Int(payload.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + entrySize + 16, as: UInt32.self) })
            let nameStart = offset + entrySize + 24
            guard nameStart + nameLength <= payload.count else { break }
            let name = Array(payload[nameStart..<(nameStart + nameLength)])
            if e.nodeid != 0 && name != [46] && name != [46, 46] { c.granted[e.nodeid, default: 0] += 1 }
            offset = nameStart + ((nameLength + 7) & ~7)
        }
    }

    // MARK: the harness

    /// What the hook saw. The backend runs each request on the calling thread, so
    /// the hook only ever runs on the test's thread: @unchecked Sendable.
    final class Tally: @unchecked Sendable {
        var names: [String] = []
        var seen = 0
        var fired = false
    }

    func openDescriptorCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    /// The wrappers a scenario calls, in order (a fault-free recording run).
    func calls(of scenario: Scenario) -> [String] {
        resetTree()
        let tally = Tally()
        FaultInjection.install { wrapper in
            tally.names.append(String(wrapper.prefix { $0 != "(" }))
            return nil
        }
        let client = Client(fs)
        scenario(client)
        FaultInjection.remove()
        XCTAssertTrue(client.errors.allSatisfy { $0.1 == 0 }, "fault-free run failed: \(client.errors)")
        client.cleanUp()
        return tally.names
    }

    /// Runs `scenario` on a fresh backend with `fault` on the `occurrence`-th call of
    /// `wrapper`, then checks replies, tables, descriptors and that serving goes on.
    func check(_ label: String, _ scenario: Scenario, wrapper: String, occurrence: Int, fault: InjectedFault,
               file: StaticString = #filePath, line: UInt = #line) {
        resetTree()
        fs = try! makeFileSystem()
        let baseline = openDescriptorCount()
        let tally = Tally()
        FaultInjection.install { name in
            guard name.prefix(while: { $0 != "(" }) == wrapper else { return nil }
            tally.seen += 1
            guard tally.seen == occurrence else { return nil }
            tally.fired = true
            return fault
        }
        let client = Client(fs)
        scenario(client)
        FaultInjection.remove()
        let what = "\(label): \(fault) on \(wrapper) #\(occurrence)"
        XCTAssertTrue(tally.fired, "\(what) never fired", file: file, line: line)

        // Every reply: success or a real errno.
        for (opcode, error) in client.errors {
            XCTAssertTrue(error == 0 || (-133 ... -1).contains(error), "\(what): \(opcode.name) replied \(error)",
                          file: file, line: line)
            // EINTR is retried inside the wrapper: the guest never sees it.
            if fault == .interrupt { XCTAssertEqual(error, 0, "\(what): \(opcode.name) saw EINTR", file: file, line: line) }
        }
        if case .fail(let e) = fault {
            // The fault reaches the guest as itself, or the request did not need the call;
            // later requests of the scenario may fail because an earlier one did.
            let consequences: Set<Int32> = [0, -e.rawValue, -ENOENT, -ENOTEMPTY, -EEXIST, -ENODATA]
            let others = client.errors.filter { !consequences.contains($0.1) }
            XCTAssertTrue(others.isEmpty, "\(what): other errors \(others.map { ($0.0.name, $0.1) })", file: file, line: line)
        }
        // The table holds exactly the lookups the replies handed out.
        for (node, count) in client.granted {
            XCTAssertEqual(fs.inodes.lookups(node), count, "\(what): node \(node) lookups", file: file, line: line)
        }
        // Every granted node is there (above), so equal counts leave no node unaccounted for.
        XCTAssertEqual(fs.inodes.count, Set(client.granted.keys).union([rootNodeID]).count,
                       "\(what): nodes the guest does not know of", file: file, line: line)
        XCTAssertEqual(fs.handles.withLock { $0.files.count }, client.handles.count,
                       "\(what): handles the guest does not know of", file: file, line: line)

        client.cleanUp()
        XCTAssertEqual(fs.inodes.count, 1, "\(what): nodes left after FORGET", file: file, line: line)
        XCTAssertEqual(fs.handles.withLock { $0.files.count }, 0, "\(what): handles left after RELEASE", file: file, line: line)
        XCTAssertEqual(openDescriptorCount(), baseline, "\(what): descriptors leaked", file: file, line: line)

        // Still serving.
        let probe = Client(fs)
        if let node = probe.lookup(1, "probe.txt"), let fh = probe.open(node, flags: O_RDONLY) {
            let (error, payload) = probe.read(node, fh)
            XCTAssertEqual(error, 0, "\(what): read after the fault", file: file, line: line)
            XCTAssertEqual(String(decoding: payload, as: UTF8.self), "still serving", file: file, line: line)
        } else {
            XCTFail("\(what): the backend stopped serving", file: file, line: line)
        }
        probe.cleanUp()
    }

    /// Every wrapper each scenario calls gets every fault at its first and last call.
    func runMatrix(_ scenarioName: String) {
        guard let scenario = Self.scenarios.first(where: { $0.0 == scenarioName })?.1 else {
            return XCTFail("no scenario \(scenarioName)")
        }
        let recorded = calls(of: scenario)
        XCTAssertFalse(recorded.isEmpty, "the scenario makes no wrapped system call")
        var points: [(String, Int)] = []
        for wrapper in Set(recorded).sorted() {
            let count = recorded.filter { $0 == wrapper }.count
            points.append((wrapper, 1))
            if count > 1 { points.append((wrapper, count)) }
        }
        for (wrapper, occurrence) in points {
            for (_, fault) in Self.failures {
                check(scenarioName, scenario, wrapper: wrapper, occurrence: occurrence, fault: fault)
            }
            if Self.countingWrappers.contains(wrapper) {
                check(scenarioName, scenario, wrapper: wrapper, occurrence: occurrence, fault: .shorten(1))
            }
        }
    }

    func testLookupOpenReadUnderFaults() { runMatrix("lookup-read") }
    func testCreateWriteFsyncUnderFaults() { runMatrix("create-write-fsync") }
    func testNamespaceOperationsUnderFaults() { runMatrix("namespace") }
    func testReaddirUnderFaults() { runMatrix("readdir") }
    func testXattrAndStatfsUnderFaults() { runMatrix("xattr-statfs") }
    func testCopyRangeAndLseekUnderFaults() { runMatrix("copy-lseek") }

    /// A short write is reported to the guest as what it was, and the bytes that
    /// were written are the ones the guest sent.
    func testShortWriteReportsTheBytesWritten() {
        resetTree()
        let client = Client(fs)
        guard let (node, fh) = client.create(1, "short.txt") else { return XCTFail("create") }
        FaultInjection.install { $0.hasPrefix("pwritev(") ? .shorten(3) : nil }
        let (error, payload) = client.write(node, fh, Array("abcdefgh".utf8))
        FaultInjection.remove()
        XCTAssertEqual(error, 0)
        XCTAssertEqual(payload.withUnsafeBytes { $0.loadUnaligned(as: fuse_write_out.self) }.size, 3)
        XCTAssertEqual(try String(contentsOfFile: hostPath("short.txt"), encoding: .utf8).prefix(3), "abc")
        client.cleanUp()
    }

    /// A READDIRPLUS whose later getdents64 fails still returns the entries it has
    /// already looked up: an error reply would drop them, and with them lookups
    /// the guest could never forget (an inode and a descriptor leaked per entry).
    /// The error comes with the next READDIR, from the last offset.
    func testReaddirplusFailingPartwayKeepsTheEntriesItLookedUp() {
        resetTree()
        for i in 0..<5 { writeHostFile("dir/f\(i)", "x") }
        let client = Client(fs)
        guard let dir = client.lookup(1, "dir"), let fh = client.open(dir, flags: O_RDONLY | O_DIRECTORY, directory: true) else {
            return XCTFail("opendir")
        }
        let tally = Tally()
        // The first getdents64 of the request works, every later one fails.
        FaultInjection.install { name in
            guard name.hasPrefix("getdents64(") else { return nil }
            tally.seen += 1
            return tally.seen == 1 ? nil : .fail(Errno(EIO))
        }
        let (error, payload) = client.read(dir, fh, size: 65536, opcode: .readdirplus)
        XCTAssertEqual(error, 0, "the entries read before the failure are the reply")
        FaultInjectionTests.grantedByReaddirplus(payload, client)
        XCTAssertEqual(client.granted.count, 7, "dir, inner.txt and f0-f4")
        var r = fuse_read_in()
        r.fh = fh
        r.offset = UInt64.max >> 1
        let again = client.send(.readdirplus, node: dir, client.raw(r))
        FaultInjection.remove()
        XCTAssertEqual(again.0, -EIO, "the failure itself reaches the guest on the next call")
        for (node, count) in client.granted {
            XCTAssertEqual(lookupCount(node), count)
        }
        client.cleanUp()
        XCTAssertEqual(fs.inodes.count, 1, "every looked-up entry was forgettable")
    }

    /// The hook sees the wrappers by name and a fault replaces the call's result.
    func testHookFailsTheNamedWrapperOnly() throws {
        FaultInjection.install { $0.hasPrefix("fstatat(") ? .fail(Errno(EIO)) : nil }
        defer { FaultInjection.remove() }
        XCTAssertThrowsError(try Sys.fstatat(AT_FDCWD, "/", flags: 0)) { XCTAssertEqual($0 as? Errno, Errno(EIO)) }
        XCTAssertNoThrow(try Sys.statxIdentity(AT_FDCWD, "/", flags: 0))
    }
}
