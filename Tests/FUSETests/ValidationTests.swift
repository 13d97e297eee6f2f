import XCTest
import CVirtioFS
import Posix
@testable import FUSE

/// Malformed requests get an error reply and never reach the filesystem.
final class ValidationTests: XCTestCase {
    var fs = RecordingFS()
    var server: Server<RecordingFS>!

    override func setUp() {
        fs = RecordingFS()
        server = initializedServer(fs, maxWrite: 64 * 1024)
    }

    func assertRejected(_ request: Request, _ expected: Int32, capacity: Int = 1 << 20,
                        file: StaticString = #filePath, line: UInt = #line) {
        let reply = send(server, request, capacity: capacity)
        XCTAssertEqual(reply.error, -expected, "errno", file: file, line: line)
        XCTAssertEqual(reply.length, 16, file: file, line: line)
        XCTAssertEqual(reply.header?.unique, request.unique, file: file, line: line)
        XCTAssertEqual(fs.calls.filter { $0 != "init" }, [], "the filesystem must not be called", file: file, line: line)
    }

    func name(_ n: Int) -> String { String(repeating: "n", count: n) }

    func testRequestShorterThanTheHeaderIsDropped() {
        let bytes = Array(Request(.lookup, cstr("x")).bytes.prefix(39))
        XCTAssertEqual(send(server, bytes).length, 0)
        XCTAssertEqual(send(server, []).length, 0)
        XCTAssertEqual(fs.calls, ["init"])
    }

    func testHeaderLengthMustMatchTheBytesDelivered() {
        var longer = Request(.lookup, cstr("x"))
        longer.lengthError = 8
        assertRejected(longer, EINVAL)
        var shorter = Request(.lookup, cstr("x"))
        shorter.lengthError = -1
        assertRejected(shorter, EINVAL)
        var belowHeader = Request(.getattr)
        belowHeader.lengthError = -30
        assertRejected(belowHeader, EINVAL)
    }

    func testTruncatedOpStructIsEINVAL() {
        assertRejected(Request(.getattr, [0, 0, 0]), EINVAL)
        assertRejected(Request(.open, [1, 2, 3, 4]), EINVAL)
        assertRejected(Request(.write, [UInt8](repeating: 0, count: 20)), EINVAL)
        assertRejected(Request(.mkdir, [0, 0, 0, 0]), EINVAL)
    }

    func testNameWithoutNULIsEINVAL() {
        assertRejected(Request(.lookup, Array("abc".utf8)), EINVAL)
        assertRejected(Request(.unlink, Array("abc".utf8)), EINVAL)
        assertRejected(Request(.rename, bytes(of: fuse_rename_in(newdir: 1)), cstr("a"), Array("b".utf8)), EINVAL)
        assertRejected(Request(.rename, bytes(of: fuse_rename_in(newdir: 1)), cstr("a")), EINVAL)
        assertRejected(Request(.symlink, cstr("a")), EINVAL)
    }

    func testMissingNameIsEINVAL() {
        assertRejected(Request(.lookup), EINVAL)
        assertRejected(Request(.mkdir, bytes(of: fuse_mkdir_in(mode: 0o755, umask: 0))), EINVAL)
    }

    func testBytesAfterTheNameAreEINVAL() {
        assertRejected(Request(.lookup, cstr("a") + [0x41]), EINVAL)
        assertRejected(Request(.lookup, cstr("a") + [0]), EINVAL)
    }

    func testNameOf256BytesIsENAMETOOLONGAnd255IsFine() {
        assertRejected(Request(.lookup, cstr(name(256))), ENAMETOOLONG)
        assertRejected(Request(.mkdir, bytes(of: fuse_mkdir_in(mode: 0o755, umask: 0)), cstr(name(300))), ENAMETOOLONG)
        assertRejected(Request(.rename, bytes(of: fuse_rename_in(newdir: 1)), cstr("a"), cstr(name(256))), ENAMETOOLONG)
        assertRejected(Request(.rename, bytes(of: fuse_rename_in(newdir: 1)), cstr(name(256)), cstr("a")), ENAMETOOLONG)
        assertRejected(Request(.lookup, cstr(name(100_000))), ENAMETOOLONG)
        XCTAssertEqual(send(server, Request(.lookup, cstr(name(255)))).error, 0)
        XCTAssertEqual(fs.calls.last, "lookup u1000 g100 p4242 #77 parent=5 name=\(name(255))")
    }

    func testSymlinkTargetUpToPathMax() {
        assertRejected(Request(.symlink, cstr("l"), cstr(name(4096))), ENAMETOOLONG)
        assertRejected(Request(.symlink, cstr("l"), cstr("")), ENOENT)
        XCTAssertEqual(send(server, Request(.symlink, cstr("l"), cstr(name(4095)))).error, 0)
    }

    func testEmptyNameAndSlashAreEINVAL() {
        assertRejected(Request(.lookup, cstr("")), EINVAL)
        assertRejected(Request(.lookup, cstr("a/b")), EINVAL)
        assertRejected(Request(.lookup, cstr("/")), EINVAL)
        assertRejected(Request(.create, bytes(of: fuse_create_in()), cstr("x/")), EINVAL)
        assertRejected(Request(.link, bytes(of: fuse_link_in(oldnodeid: 3)), cstr("a/b")), EINVAL)
        assertRejected(Request(.rename2, bytes(of: fuse_rename2_in(newdir: 1, flags: 0, padding: 0)), cstr("a"), cstr("../b")), EINVAL)
        assertRejected(Request(.symlink, cstr("a/b"), cstr("t")), EINVAL)
    }

    func testDotAndDotDotCannotBeCreatedOrRemoved() {
        for dot in [".", ".."] {
            assertRejected(Request(.mkdir, bytes(of: fuse_mkdir_in(mode: 0o755, umask: 0)), cstr(dot)), EEXIST)
            assertRejected(Request(.mknod, bytes(of: fuse_mknod_in()), cstr(dot)), EEXIST)
            assertRejected(Request(.create, bytes(of: fuse_create_in()), cstr(dot)), EEXIST)
            assertRejected(Request(.symlink, cstr(dot), cstr("t")), EEXIST)
            assertRejected(Request(.link, bytes(of: fuse_link_in(oldnodeid: 3)), cstr(dot)), EEXIST)
            assertRejected(Request(.unlink, cstr(dot)), EINVAL)
            assertRejected(Request(.rmdir, cstr(dot)), EINVAL)
            assertRejected(Request(.rename, bytes(of: fuse_rename_in(newdir: 1)), cstr(dot), cstr("b")), EINVAL)
            assertRejected(Request(.rename, bytes(of: fuse_rename_in(newdir: 1)), cstr("a"), cstr(dot)), EINVAL)
        }
    }

    func testLookupOfDotDotReachesTheFilesystem() {
        // The kernel looks up ".." to find a parent when the share is exported over NFS.
        XCTAssertEqual(send(server, Request(.lookup, cstr(".."))).error, 0)
        XCTAssertEqual(fs.calls.last, "lookup u1000 g100 p4242 #77 parent=5 name=..")
    }

    func testXattrNameLimits() {
        assertRejected(Request(.getxattr, bytes(of: fuse_getxattr_in(size: 0, padding: 0)), cstr("user." + name(251))), ERANGE)
        assertRejected(Request(.removexattr, cstr("")), ERANGE)
        assertRejected(Request(.removexattr, Array("user.x".utf8)), EINVAL)
        assertRejected(Request(.setxattr, bytes(of: UInt32(1)), bytes(of: UInt32(0)), cstr("user." + name(251)), [0x41]), ERANGE)
        assertRejected(Request(.setxattr, bytes(of: UInt32(1)), bytes(of: UInt32(0)), cstr(""), [0x41]), ERANGE)
        XCTAssertEqual(send(server, Request(.getxattr, bytes(of: fuse_getxattr_in(size: 0, padding: 0)), cstr("user." + name(250)))).error, 0)
    }

    func testXattrValueLimits() {
        let big = [UInt8](repeating: 0x41, count: 65537)
        assertRejected(Request(.setxattr, bytes(of: UInt32(65537)), bytes(of: UInt32(0)), cstr("user.x"), big), E2BIG)
        // A value size that disagrees with the bytes that follow.
        assertRejected(Request(.setxattr, bytes(of: UInt32(4)), bytes(of: UInt32(0)), cstr("user.x"), Array("abc".utf8)), EINVAL)
        assertRejected(Request(.setxattr, bytes(of: UInt32(2)), bytes(of: UInt32(0)), cstr("user.x"), Array("abc".utf8)), EINVAL)
        assertRejected(Request(.setxattr, bytes(of: UInt32(0)), bytes(of: UInt32(0)), Array("user.x".utf8)), EINVAL)
        let max = [UInt8](repeating: 0x41, count: 65536)
        XCTAssertEqual(send(server, Request(.setxattr, bytes(of: UInt32(65536)), bytes(of: UInt32(0)), cstr("user.x"), max)).error, 0)
    }

    func testWriteLargerThanMaxWriteOrThanItsPayloadIsEINVAL() {
        let tooBig = 64 * 1024 + 1
        assertRejected(Request(.write, bytes(of: fuse_write_in(fh: 1, offset: 0, size: UInt32(tooBig), write_flags: 0, lock_owner: 0, flags: 0, padding: 0)),
                               [UInt8](repeating: 1, count: tooBig)), EINVAL)
        assertRejected(Request(.write, bytes(of: fuse_write_in(fh: 1, offset: 0, size: 10, write_flags: 0, lock_owner: 0, flags: 0, padding: 0)),
                               [UInt8](repeating: 1, count: 9)), EINVAL)
        assertRejected(Request(.write, bytes(of: fuse_write_in(fh: 1, offset: 0, size: UInt32.max, write_flags: 0, lock_owner: 0, flags: 0, padding: 0))), EINVAL)
    }

    func testReadLargerThanMaxWriteIsEINVAL() {
        let big = initializedServer(fs, maxWrite: 1 << 20)
        let reply = send(big, Request(.read, bytes(of: fuse_read_in(fh: 1, offset: 0, size: (1 << 20) + 1, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))))
        XCTAssertEqual(reply.error, -EINVAL)
        XCTAssertEqual(fs.calls, ["init", "init"])
        // With a small max_write the kernel still reads up to its default 32 pages.
        assertRejected(Request(.read, bytes(of: fuse_read_in(fh: 1, offset: 0, size: 128 * 1024 + 1, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))), EINVAL)
        assertRejected(Request(.read, bytes(of: fuse_read_in(fh: 1, offset: 0, size: UInt32.max, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))), EINVAL)
    }

    func testExtensionLengthBeyondTheRequestIsEINVAL() {
        var bytes = Request(.mkdir, FUSETests.bytes(of: fuse_mkdir_in(mode: 0o755, umask: 0)), cstr("d")).bytes
        bytes[36] = 0xFF // total_extlen: far more than the request holds
        let reply = send(server, bytes)
        XCTAssertEqual(reply.error, -EINVAL)
        XCTAssertEqual(fs.calls, ["init"])
    }

    func testMalformedExtensionsAreEINVAL() {
        func mkdir(_ ext: [UInt8]) -> Request {
            var r = Request(.mkdir, bytes(of: fuse_mkdir_in(mode: 0o755, umask: 0)), cstr("d"))
            r.extensions = ext
            return r
        }
        // Record size larger than the area.
        assertRejected(mkdir(bytes(of: fuse_ext_header(size: 64, type: 32)) + bytes(of: UInt64(1))), EINVAL)
        // Record size below its own header.
        assertRejected(mkdir(bytes(of: fuse_ext_header(size: 4, type: 32))), EINVAL)
        // A security context whose name has no NUL.
        let noNul = bytes(of: fuse_secctx_header(size: 24, nr_secctx: 1)) + bytes(of: fuse_secctx(size: 0, padding: 0)) + Array("security".utf8)
        assertRejected(mkdir(noNul), EINVAL)
        // A security context value running past the record.
        let overrun = bytes(of: fuse_secctx_header(size: 24, nr_secctx: 1)) + bytes(of: fuse_secctx(size: 100, padding: 0)) + cstr("sec.x") + [0, 0]
        assertRejected(mkdir(overrun), EINVAL)
        // More groups than the record holds.
        assertRejected(mkdir(bytes(of: fuse_ext_header(size: 16, type: 32)) + bytes(of: UInt32(5)) + bytes(of: UInt32(1))), EINVAL)
    }

    func testUnknownExtensionTypesAreSkipped() {
        var r = Request(.mkdir, bytes(of: fuse_mkdir_in(mode: 0o755, umask: 0)), cstr("d"))
        r.extensions = bytes(of: fuse_ext_header(size: 16, type: 77)) + bytes(of: UInt64(0)) + groupsExtension(9)
        XCTAssertEqual(send(server, r).error, 0)
        XCTAssertEqual(fs.lastExtras?.group, 9)
    }

    func testWriterTooSmallForTheReplyGetsNothing() {
        // LOOKUP needs 16 + 128 bytes.
        let reply = send(server, Request(.lookup, cstr("x")), capacity: 100)
        XCTAssertEqual(reply.length, 0)
        XCTAssertEqual(send(server, Request(.lookup, cstr("x")), capacity: 10).length, 0)
        XCTAssertEqual(send(server, Request(.getattr, bytes(of: fuse_getattr_in())), capacity: 16).length, 0)
        XCTAssertEqual(send(server, Request(.create, bytes(of: fuse_create_in()), cstr("c")), capacity: 150).length, 0)
    }

    func testRepliesSizedByTheWriterGetNothingWhenNotEvenTheHeaderFits() {
        let readIn = bytes(of: fuse_read_in(fh: 1, offset: 0, size: 100, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))
        XCTAssertEqual(send(server, Request(.read, readIn), capacity: 10).length, 0)
        XCTAssertEqual(send(server, Request(.readdir, readIn), capacity: 10).length, 0)
        XCTAssertEqual(send(server, Request(.readlink), capacity: 10).length, 0)
        var getxattrIn = fuse_getxattr_in()
        getxattrIn.size = 100
        XCTAssertEqual(send(server, Request(.getxattr, bytes(of: getxattrIn), cstr("user.x")), capacity: 10).length, 0)
        XCTAssertEqual(send(server, Request(.listxattr, bytes(of: getxattrIn)), capacity: 10).length, 0)
    }

    func testNothingIsWrittenWhenTheReplyDoesNotFit() {
        var input = Request(.lookup, cstr("x")).bytes
        var output = [UInt8](repeating: 0xAA, count: 100)
        input.withUnsafeMutableBytes { i in
            output.withUnsafeMutableBytes { o in
                var reader = MemoryReader(UnsafeRawBufferPointer(i))
                var writer = MemoryWriter(o)
                XCTAssertEqual(server.handle(&reader, &writer), 0)
                XCTAssertEqual(writer.written, 0)
            }
        }
        XCTAssertEqual(output, [UInt8](repeating: 0xAA, count: 100))
    }

    func testReadUpTo32PagesIsAcceptedWhateverMaxWrite() {
        XCTAssertEqual(send(server, Request(.read, bytes(of: fuse_read_in(fh: 1, offset: 0, size: 128 * 1024, read_flags: 0, lock_owner: 0, flags: 0, padding: 0)))).error, 0)
    }

    func testReadIntoASmallerWriterIsShortNotOverflowing() {
        fs.readData = [UInt8](repeating: 7, count: 1000)
        let reply = send(server, Request(.read, bytes(of: fuse_read_in(fh: 1, offset: 0, size: 1000, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))), capacity: 16 + 100)
        XCTAssertEqual(reply.length, 116)
        XCTAssertEqual(reply.header?.len, 116)
        XCTAssertEqual(fs.calls.last, "read node=5 fh=1 off=0 size=100")
    }
}
