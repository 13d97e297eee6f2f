import Foundation
import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// Malformed and malicious FUSE requests, as a hostile guest kernel could post them, against
/// our daemon in its default (namespace) sandbox. Each gets an error reply (FORGETs get
/// none), and the daemon keeps answering afterwards.
final class DaemonHostileRequestTests: XCTestCase {
    /// What came back for one raw request.
    struct RawReply {
        /// The length the used ring reported.
        let used: UInt32
        /// The reply header, when at least 16 bytes came back.
        let length: UInt32?
        let error: Int32?
        let unique: UInt64?
        let body: [UInt8]
    }

    final class Session {
        let scratch: Scratch
        let daemon: SpawnedDaemon
        let frontend: VhostUserFrontend
        let fuse: FuseClient
        let request: GuestBuffer
        let reply: GuestBuffer
        private var unique: UInt64 = 1 << 40

        init() throws {
            scratch = try Scratch(files: ["f": "0123456789"])
            daemon = try SpawnedDaemon(["--socket-path=\(scratch.socketPath)", "-o", "source=\(scratch.shared.path)"],
                                       in: scratch.directory)
            guard daemon.waitForSocket(scratch.socketPath) else { throw XCTSkip("no daemon: \(daemon.standardError)") }
            (frontend, fuse) = try connectAndInitialize(scratch.socketPath)
            request = try frontend.memory.allocate(1 << 16, alignment: 4096)
            reply = try frontend.memory.allocate(1 << 16, alignment: 4096)
        }

        deinit {
            frontend.close()
            daemon.stop()
        }

        /// A request header; `length` defaults to 40 + `body.count`.
        func header(_ opcode: UInt32, node: UInt64, bodyCount: Int, length: UInt32? = nil) -> [UInt8] {
            var h = fuse_in_header()
            h.len = length ?? UInt32(40 + bodyCount)
            h.opcode = opcode
            unique += 1
            h.unique = unique
            h.nodeid = node
            return withUnsafeBytes(of: h) { Array($0) }
        }

        /// Posts `bytes` as one readable buffer (of `readable` bytes, default all) and a
        /// writable buffer of `replyCapacity` bytes (none when 0) on queue `queue`.
        func post(_ bytes: [UInt8], readable: Int? = nil, replyCapacity: Int = 4096, queue: Int = 1) throws -> RawReply {
            request.bytes.initializeMemory(as: UInt8.self, repeating: 0)
            reply.bytes.initializeMemory(as: UInt8.self, repeating: 0)
            bytes.withUnsafeBytes { request.bytes.copyMemory(from: $0) }
            var chain = [Descriptor(request.prefix(readable ?? bytes.count), writable: false)]
            if replyCapacity > 0 { chain.append(Descriptor(reply.prefix(replyCapacity), writable: true)) }
            let q = frontend.queues[queue]
            let head = try q.submit(chain)
            let used = try q.waitForUsed(count: 1)
            XCTAssertEqual(used.first?.head, head)
            let n = used.first?.length ?? 0
            guard n >= 16 else { return RawReply(used: n, length: nil, error: nil, unique: nil, body: []) }
            let p = reply.pointer
            let count = min(Int(n), replyCapacity) - 16
            return RawReply(used: n, length: p.loadUnaligned(as: UInt32.self),
                            error: p.loadUnaligned(fromByteOffset: 4, as: Int32.self),
                            unique: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self),
                            body: Array(UnsafeRawBufferPointer(start: p + 16, count: max(count, 0))))
        }

        /// Proves the daemon still serves: GETATTR of the root and a LOOKUP succeed.
        func assertStillServing(file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertNoThrow(try fuse.getattr(node: UInt64(FUSE_ROOT_ID)), daemon.standardError, file: file, line: line)
            XCTAssertEqual(try? fuse.lookup(name: "f").attr.size, 10, file: file, line: line)
            XCTAssertTrue(daemon.isRunning, daemon.standardError, file: file, line: line)
        }
    }

    static let root = UInt64(FUSE_ROOT_ID)

    private func assertErrorReply(_ r: RawReply, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertGreaterThanOrEqual(r.used, 16, "\(what): no reply header", file: file, line: line)
        XCTAssertLessThan(r.error ?? 0, 0, "\(what): expected an error, got \(String(describing: r.error))", file: file, line: line)
        XCTAssertEqual(r.length, 16, "\(what): an error reply is the header alone", file: file, line: line)
    }

    private func lookupBytes(_ s: Session, parent: UInt64 = root, name: [UInt8]) -> [UInt8] {
        s.header(FUSE_LOOKUP.rawValue, node: parent, bodyCount: name.count) + name
    }

    // MARK: - Special files

    func testCreateOverAnExistingFIFOIsRefusedAndTheQueueKeepsServing() throws {
        let s = try Session()
        XCTAssertEqual(mkfifo(s.scratch.shared.appendingPathComponent("fifo").path, 0o666), 0)
        // Without O_EXCL the kernel would open the FIFO, waiting for a writer that never comes.
        XCTAssertThrowsError(try s.fuse.create(name: "fifo", flags: O_RDONLY))
        s.assertStillServing()
        // An existing regular file is opened, as open(2) with O_CREAT does.
        let existing = try s.fuse.create(name: "f", flags: O_RDWR)
        XCTAssertEqual(try s.fuse.read(node: existing.entry.nodeid, handle: existing.open.fh, offset: 0, size: 64),
                       Array("0123456789".utf8))
    }

    // MARK: - Names

    func testDotDotAtTheRootRevealsNothingOutsideTheShare() throws {
        let s = try Session()
        let rootAttr = try s.fuse.getattr(node: Self.root).attr
        for name in ["..", "."] {
            let r = try s.post(lookupBytes(s, name: Array(name.utf8) + [0]))
            if r.error == 0 {
                let entry = r.body.withUnsafeBytes { $0.loadUnaligned(as: fuse_entry_out.self) }
                XCTAssertEqual(entry.attr.ino, rootAttr.ino, "\(name) at the root must be the root itself")
                XCTAssertEqual(entry.nodeid, Self.root, "\(name) at the root must be the root's node")
            } else {
                XCTAssertLessThan(r.error ?? 0, 0, name)
            }
        }
        s.assertStillServing()
    }

    func testNamesWithSlashesOrEmptyOrTooLongAreRefused() throws {
        let s = try Session()
        let names: [(String, [UInt8])] = [
            ("/", Array("/".utf8) + [0]),
            ("a/b", Array("a/b".utf8) + [0]),
            ("/etc", Array("/etc".utf8) + [0]),
            ("../f", Array("../f".utf8) + [0]),
            ("empty", [0]),
            ("300 bytes", [UInt8](repeating: UInt8(ascii: "x"), count: 300) + [0]),
        ]
        for (what, name) in names {
            assertErrorReply(try s.post(lookupBytes(s, name: name)), "LOOKUP \(what)")
        }
        s.assertStillServing()
    }

    func testNameWithoutTerminatingNulIsRefused() throws {
        let s = try Session()
        assertErrorReply(try s.post(lookupBytes(s, name: Array("f".utf8))), "LOOKUP without NUL")
        s.assertStillServing()
    }

    // MARK: - Lengths

    func testHeaderLengthLargerThanTheChainIsRefused() throws {
        let s = try Session()
        let body = [UInt8](repeating: 0, count: 16)
        let bytes = s.header(FUSE_GETATTR.rawValue, node: Self.root, bodyCount: 16, length: 40 + 16 + 4096) + body
        assertErrorReply(try s.post(bytes), "header length beyond the chain")
        let huge = s.header(FUSE_GETATTR.rawValue, node: Self.root, bodyCount: 16, length: UInt32.max) + body
        assertErrorReply(try s.post(huge), "header length 2^32-1")
        s.assertStillServing()
    }

    func testHeaderLengthSmallerThanTheChainIsRefused() throws {
        let s = try Session()
        let body = [UInt8](repeating: 0, count: 16)
        for length: UInt32 in [0, 20, 40] {
            let bytes = s.header(FUSE_GETATTR.rawValue, node: Self.root, bodyCount: 16, length: length) + body
            // Too short to hold the header (or the GETATTR body it came with).
            assertErrorReply(try s.post(bytes), "header length \(length)")
        }
        s.assertStillServing()
    }

    func testWriteLongerThanItsPayloadIsRefusedAndWritesNothing() throws {
        let s = try Session()
        let created = try s.fuse.create(name: "w", flags: O_RDWR)
        var body = fuse_write_in()
        body.fh = created.open.fh
        body.offset = 0
        body.size = 1 << 20
        let payload = [UInt8](repeating: 0x41, count: 10)
        let bodyBytes = withUnsafeBytes(of: body) { Array($0) } + payload
        let bytes = s.header(FUSE_WRITE.rawValue, node: created.entry.nodeid, bodyCount: bodyBytes.count) + bodyBytes
        assertErrorReply(try s.post(bytes), "WRITE of 1 MiB with 10 bytes")
        XCTAssertEqual(try s.fuse.getattr(node: created.entry.nodeid).attr.size, 0, "nothing may be written")
        s.assertStillServing()
    }

    func testReadOfTwoGigabytesIntoASmallBufferNeverOverflows() throws {
        let s = try Session()
        let entry = try s.fuse.lookup(name: "f")
        let handle = try s.fuse.open(node: entry.nodeid).fh
        for size: UInt32 in [1 << 31, UInt32.max] {
            var body = fuse_read_in()
            body.fh = handle
            body.size = size
            let bodyBytes = withUnsafeBytes(of: body) { Array($0) }
            let r = try s.post(s.header(FUSE_READ.rawValue, node: entry.nodeid, bodyCount: bodyBytes.count) + bodyBytes,
                               replyCapacity: 4096)
            XCTAssertGreaterThanOrEqual(r.used, 16)
            XCTAssertLessThanOrEqual(r.used, 4096, "the daemon wrote past the buffer it was given")
            if r.error == 0 {
                // Capped to what fits: the file's ten bytes.
                XCTAssertEqual(r.length, 26)
                XCTAssertEqual(Array(r.body.prefix(10)), Array("0123456789".utf8))
            } else {
                assertErrorReply(r, "READ of \(size)")
            }
        }
        s.assertStillServing()
    }

    // MARK: - Unknown nodes and handles

    func testGetattrAndReadOnNodesNeverLookedUpAreRefused() throws {
        let s = try Session()
        var generator = SystemRandomNumberGenerator()
        let nodes: [UInt64] = [0, 2, 0xdead_beef, UInt64.max, UInt64.max - 1] + (0..<8).map { _ in generator.next() }
        for node in nodes {
            let g = fuse_getattr_in()
            let gb = withUnsafeBytes(of: g) { Array($0) }
            assertErrorReply(try s.post(s.header(FUSE_GETATTR.rawValue, node: node, bodyCount: gb.count) + gb),
                             "GETATTR of node \(node)")
            var r = fuse_read_in()
            r.fh = generator.next()
            r.size = 4096
            let rb = withUnsafeBytes(of: r) { Array($0) }
            assertErrorReply(try s.post(s.header(FUSE_READ.rawValue, node: node, bodyCount: rb.count) + rb),
                             "READ of node \(node)")
        }
        s.assertStillServing()
    }

    func testReadWithHandlesNeverOpenedIsRefused() throws {
        let s = try Session()
        let entry = try s.fuse.lookup(name: "f")
        var generator = SystemRandomNumberGenerator()
        for handle in [0, 1, 2, UInt64.max, generator.next(), generator.next()] {
            var r = fuse_read_in()
            r.fh = handle
            r.size = 4096
            let rb = withUnsafeBytes(of: r) { Array($0) }
            assertErrorReply(try s.post(s.header(FUSE_READ.rawValue, node: entry.nodeid, bodyCount: rb.count) + rb),
                             "READ with handle \(handle)")
        }
        s.assertStillServing()
    }

    // MARK: - Forgets

    func testForgetOfUnknownNodesWithHugeCountsGetsNoReply() throws {
        let s = try Session()
        var generator = SystemRandomNumberGenerator()
        for node in [2, UInt64.max, generator.next(), generator.next()] {
            let f = withUnsafeBytes(of: fuse_forget_in(nlookup: UInt64.max)) { Array($0) }
            let r = try s.post(s.header(FUSE_FORGET.rawValue, node: node, bodyCount: f.count) + f, queue: 0)
            XCTAssertEqual(r.used, 0, "FORGET has no reply")
        }
        s.assertStillServing()
    }

    func testForgetOfTheRootWithAHugeCountKeepsTheRoot() throws {
        let s = try Session()
        let f = withUnsafeBytes(of: fuse_forget_in(nlookup: UInt64.max)) { Array($0) }
        XCTAssertEqual(try s.post(s.header(FUSE_FORGET.rawValue, node: Self.root, bodyCount: f.count) + f, queue: 0).used, 0)
        s.assertStillServing()
    }

    func testForgetOfALookedUpNodeBeyondItsCountDoesNotUnderflow() throws {
        let s = try Session()
        let entry = try s.fuse.lookup(name: "f")
        let f = withUnsafeBytes(of: fuse_forget_in(nlookup: UInt64.max)) { Array($0) }
        XCTAssertEqual(try s.post(s.header(FUSE_FORGET.rawValue, node: entry.nodeid, bodyCount: f.count) + f, queue: 0).used, 0)
        // The node is gone (or still valid): either way a fresh lookup works.
        s.assertStillServing()
    }

    func testBatchForgetClaimingMoreEntriesThanItCarriesIsHarmless() throws {
        let s = try Session()
        let entry = try s.fuse.lookup(name: "f")
        for count: UInt32 in [2, 1000, UInt32.max] {
            var body = withUnsafeBytes(of: fuse_batch_forget_in(count: count, dummy: 0)) { Array($0) }
            body += withUnsafeBytes(of: fuse_forget_one(nodeid: entry.nodeid, nlookup: 1)) { Array($0) }
            let r = try s.post(s.header(FUSE_BATCH_FORGET.rawValue, node: 0, bodyCount: body.count) + body,
                               replyCapacity: 0, queue: 0)
            XCTAssertEqual(r.used, 0, "BATCH_FORGET has no reply")
        }
        s.assertStillServing()
    }

    // MARK: - Protocol

    func testSecondInitIsRefused() throws {
        let s = try Session()
        var body = fuse_init_in()
        body.major = UInt32(FUSE_KERNEL_VERSION)
        body.minor = UInt32(FUSE_KERNEL_MINOR_VERSION)
        let bytes = withUnsafeBytes(of: body) { Array($0) }
        assertErrorReply(try s.post(s.header(FUSE_INIT.rawValue, node: 0, bodyCount: bytes.count) + bytes), "second INIT")
        s.assertStillServing()
    }

    func testUnknownOpcodeGetsENOSYS() throws {
        let s = try Session()
        for opcode: UInt32 in [9999, 0, UInt32.max] {
            let r = try s.post(s.header(opcode, node: Self.root, bodyCount: 0))
            assertErrorReply(r, "opcode \(opcode)")
            if opcode == 9999 { XCTAssertEqual(r.error, -ENOSYS) }
        }
        s.assertStillServing()
    }

    func testReplyBufferTooSmallForTheHeaderIsSurvived() throws {
        let s = try Session()
        let g = withUnsafeBytes(of: fuse_getattr_in()) { Array($0) }
        let r = try s.post(s.header(FUSE_GETATTR.rawValue, node: Self.root, bodyCount: g.count) + g, replyCapacity: 8)
        XCTAssertLessThanOrEqual(r.used, 8, "the daemon wrote past the buffer it was given")
        let none = try s.post(s.header(FUSE_GETATTR.rawValue, node: Self.root, bodyCount: g.count) + g, replyCapacity: 0)
        XCTAssertEqual(none.used, 0)
        s.assertStillServing()
    }
}
