import XCTest
import CVirtioFS
import Posix
@testable import FUSE

final class InitTests: XCTestCase {
    func newServer(_ fs: RecordingFS = RecordingFS(), maxWrite: Int = 1 << 20) -> Server<RecordingFS> {
        Server(filesystem: fs, options: ServerOptions(maxWrite: maxWrite), logger: .discarding)
    }

    func testEveryMinorFrom31To38IsAcceptedAndEchoed() {
        for minor: UInt32 in 31...38 {
            let server = newServer()
            let reply = send(server, initRequest(minor: minor, flags: allKernelFlags))
            XCTAssertEqual(reply.error, 0, "7.\(minor)")
            XCTAssertEqual(reply.length, 16 + MemoryLayout<fuse_init_out>.size)
            let out = reply.decode(fuse_init_out.self)
            XCTAssertEqual(out?.major, 7)
            XCTAssertEqual(out?.minor, minor)
            XCTAssertEqual(server.negotiatedMinor, minor)
        }
    }

    func testNewerMinorIsAnsweredWith38() {
        let server = newServer()
        let out = send(server, initRequest(minor: 44, flags: allKernelFlags)).decode(fuse_init_out.self)
        XCTAssertEqual(out?.minor, 38)
    }

    func testLegacyShortInitStructIsAccepted() {
        // Before 7.36 the kernel sent only major, minor, max_readahead and flags.
        let server = newServer()
        let reply = send(server, Request(.initialize, nodeid: 0, bytes(of: UInt32(7)), bytes(of: UInt32(31)),
                                         bytes(of: UInt32(65536)), bytes(of: UInt32(FUSE_ASYNC_READ | FUSE_BIG_WRITES))))
        XCTAssertEqual(reply.error, 0)
        let out = reply.decode(fuse_init_out.self)
        XCTAssertEqual(out?.flags, UInt32(FUSE_ASYNC_READ | FUSE_BIG_WRITES))
        XCTAssertEqual(out?.max_readahead, 65536)
    }

    func testNewerMajorGetsOnlyOurMajorAndMayRetry() {
        let fs = RecordingFS()
        let server = newServer(fs)
        let reply = send(server, initRequest(major: 8, minor: 0, flags: allKernelFlags))
        XCTAssertEqual(reply.error, 0)
        let out = reply.decode(fuse_init_out.self)
        XCTAssertEqual(out?.major, 7)
        XCTAssertEqual(out?.flags, 0)
        XCTAssertEqual(out?.max_write, 0)
        XCTAssertEqual(fs.calls, [], "the filesystem is not initialised by a version probe")
        // The retry with major 7 succeeds.
        XCTAssertEqual(send(server, initRequest(flags: allKernelFlags)).error, 0)
    }

    func testOldMajorOrMinorIsEPROTO() {
        for (major, minor): (UInt32, UInt32) in [(6, 38), (7, 30), (7, 0)] {
            let fs = RecordingFS()
            let server = newServer(fs)
            let reply = send(server, initRequest(major: major, minor: minor, flags: allKernelFlags))
            XCTAssertEqual(reply.error, -EPROTO, "\(major).\(minor)")
            XCTAssertEqual(reply.length, 16)
            XCTAssertEqual(fs.calls, [])
            // Still waiting for a good INIT.
            XCTAssertEqual(send(server, Request(.getattr, bytes(of: fuse_getattr_in()))).error, -EIO)
            XCTAssertEqual(send(server, initRequest(flags: allKernelFlags)).error, 0)
        }
    }

    func testOnlyOfferedFlagsAreAnswered() {
        let fs = RecordingFS()
        fs.wanted = [.posixLocks, .doReaddirplus, .writebackCache, .posixACL]
        let server = newServer(fs)
        let offered = UInt64(FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES)
        let out = send(server, initRequest(flags: offered)).decode(fuse_init_out.self)
        // Ours (async read, big writes, max pages) and the filesystem's, but never writeback or ACLs, which were not offered.
        XCTAssertEqual(out?.flags, UInt32(FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES))
        XCTAssertEqual(out?.flags2, 0)
        XCTAssertEqual(fs.offered?.rawValue, offered)
        XCTAssertEqual(server.negotiatedFlags.rawValue, offered)
    }

    func testDispatcherFlagsAreAgreedWithoutTheFilesystemAskingForThem() {
        let server = newServer()
        let out = send(server, initRequest(flags: allKernelFlags)).decode(fuse_init_out.self)
        let expected = Server<RecordingFS>.dispatcherFlags.rawValue
        XCTAssertEqual(out.map { UInt64($0.flags) | UInt64($0.flags2) << 32 }, expected)
        for flag: InitFlags in [.asyncRead, .atomicOTrunc, .exportSupport, .bigWrites, .maxPages, .parallelDirops, .asyncDIO, .initExt] {
            XCTAssertTrue(server.negotiatedFlags.contains(flag))
        }
        XCTAssertFalse(server.negotiatedFlags.contains(.writebackCache))
    }

    func testHighFlagsTravelInFlags2OnlyWithInitExt() {
        let fs = RecordingFS()
        fs.wanted = [.securityContext, .createSuppGroup]
        let withExt = newServer(fs)
        let out = send(withExt, initRequest(flags: allKernelFlags)).decode(fuse_init_out.self)
        XCTAssertEqual(out?.flags2, UInt32((CVFS_FUSE_SECURITY_CTX | CVFS_FUSE_CREATE_SUPP_GROUP) >> 32))
        XCTAssertNotEqual((out?.flags ?? 0) & UInt32(FUSE_INIT_EXT), 0)

        // Without INIT_EXT the kernel's flags2 is garbage to us: ignore it.
        let fs2 = RecordingFS()
        fs2.wanted = [.securityContext]
        let noExt = newServer(fs2)
        let out2 = send(noExt, initRequest(flags: allKernelFlags & ~UInt64(FUSE_INIT_EXT))).decode(fuse_init_out.self)
        XCTAssertEqual(out2?.flags2, 0)
        XCTAssertEqual(fs2.offered.map { $0.rawValue >> 32 }, 0)
    }

    func testExtensionFlagsAreNotOfferedBelow738() {
        let fs = RecordingFS()
        fs.wanted = [.securityContext, .createSuppGroup]
        let server = newServer(fs)
        let out = send(server, initRequest(minor: 37, flags: allKernelFlags)).decode(fuse_init_out.self)
        XCTAssertEqual(out?.flags2, 0)
        XCTAssertFalse(fs.offered?.contains(.securityContext) ?? true)
    }

    func testLimitsAreAnnounced() {
        let server = newServer(maxWrite: 256 * 1024)
        let out = send(server, initRequest(flags: allKernelFlags, maxReadahead: 12345)).decode(fuse_init_out.self)
        XCTAssertEqual(out?.max_write, 256 * 1024)
        XCTAssertEqual(out?.max_pages, 64)
        XCTAssertEqual(out?.time_gran, 1)
        XCTAssertEqual(out?.max_readahead, 12345)
        XCTAssertGreaterThan(out?.max_background ?? 0, 0)
        XCTAssertGreaterThan(out?.congestion_threshold ?? 0, 0)
    }

    func testMaxWriteIsClampedTo1MiB() {
        XCTAssertEqual(ServerOptions(maxWrite: 1 << 24).maxWrite, 1 << 20)
        XCTAssertEqual(ServerOptions(maxWrite: 1 << 24).maxPages, 256)
        XCTAssertEqual(ServerOptions(maxWrite: 1).maxWrite, 4096)
        XCTAssertEqual(ServerOptions().maxWrite, 1 << 20)
    }

    func testRequestsBeforeInitGetEIO() {
        let fs = RecordingFS()
        let server = newServer(fs)
        let reply = send(server, Request(.lookup, cstr("x")))
        XCTAssertEqual(reply.error, -EIO)
        XCTAssertEqual(send(server, Request(.destroy)).error, -EIO)
        XCTAssertEqual(fs.calls, [])
    }

    func testForgetBeforeInitIsDroppedSilently() {
        let fs = RecordingFS()
        let server = newServer(fs)
        XCTAssertEqual(send(server, Request(.forget, bytes(of: fuse_forget_in(nlookup: 1)))).length, 0)
        XCTAssertEqual(fs.calls, [])
    }

    func testSecondInitGetsEIO() {
        let fs = RecordingFS()
        let server = newServer(fs)
        XCTAssertEqual(send(server, initRequest(flags: allKernelFlags)).error, 0)
        XCTAssertEqual(send(server, initRequest(flags: allKernelFlags)).error, -EIO)
        XCTAssertEqual(fs.calls, ["init"])
    }

    func testDestroyEndsTheSessionAndAllowsANewInit() {
        let fs = RecordingFS()
        let server = newServer(fs)
        XCTAssertEqual(send(server, initRequest(flags: allKernelFlags)).error, 0)
        let destroy = send(server, Request(.destroy, nodeid: 0))
        XCTAssertEqual(destroy.error, 0)
        XCTAssertEqual(destroy.length, 16)
        XCTAssertEqual(server.negotiatedFlags, [])
        XCTAssertEqual(send(server, Request(.lookup, cstr("x"))).error, -EIO)
        XCTAssertEqual(send(server, initRequest(flags: allKernelFlags)).error, 0)
        XCTAssertEqual(fs.calls, ["init", "destroy", "init"])
    }

    func testFilesystemRefusingInitLeavesTheSessionWaiting() {
        let fs = RecordingFS()
        fs.failure = .noMemory
        let server = newServer(fs)
        XCTAssertEqual(send(server, initRequest(flags: allKernelFlags)).error, -ENOMEM)
        fs.failure = nil
        XCTAssertEqual(send(server, initRequest(flags: allKernelFlags)).error, 0)
    }

    func testInitWithoutRoomForTheReplyIsNotAnsweredAndNotAgreed() {
        let server = newServer()
        XCTAssertEqual(send(server, initRequest(flags: allKernelFlags), capacity: 40).length, 0)
        XCTAssertEqual(send(server, initRequest(flags: allKernelFlags)).error, 0)
    }
}
