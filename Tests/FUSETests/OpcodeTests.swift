import XCTest
import CVirtioFS
import Posix
@testable import FUSE

/// Decoding and encoding of every opcode: each request is laid out as the kernel
/// sends it; the recording filesystem shows what was decoded, and the reply bytes
/// are compared whole.
final class OpcodeTests: XCTestCase {
    struct Case {
        var name: String
        var request: Request
        var call: String
        var payload: [UInt8]
        var file: StaticString = #filePath
        var line: UInt = #line
    }

    func entryBytes(_ node: NodeID) -> [UInt8] { bytes(of: fuse_entry_out(testEntry(node))) }
    func openBytes(_ fh: UInt64, _ flags: OpenReplyFlags) -> [UInt8] { bytes(of: fuse_open_out(fh: fh, open_flags: flags.rawValue, padding: 0)) }
    func attrBytes(_ node: NodeID, _ timeout: Timeout) -> [UInt8] {
        bytes(of: fuse_attr_out(AttributesReply(attributes: testStat(ino: node), timeout: timeout)))
    }

    func testOpcodeValuesMatchTheKernelHeader() {
        XCTAssertEqual(Opcode.lookup.rawValue, FUSE_LOOKUP.rawValue)
        XCTAssertEqual(Opcode.forget.rawValue, FUSE_FORGET.rawValue)
        XCTAssertEqual(Opcode.getattr.rawValue, FUSE_GETATTR.rawValue)
        XCTAssertEqual(Opcode.setattr.rawValue, FUSE_SETATTR.rawValue)
        XCTAssertEqual(Opcode.readlink.rawValue, FUSE_READLINK.rawValue)
        XCTAssertEqual(Opcode.symlink.rawValue, FUSE_SYMLINK.rawValue)
        XCTAssertEqual(Opcode.mknod.rawValue, FUSE_MKNOD.rawValue)
        XCTAssertEqual(Opcode.mkdir.rawValue, FUSE_MKDIR.rawValue)
        XCTAssertEqual(Opcode.unlink.rawValue, FUSE_UNLINK.rawValue)
        XCTAssertEqual(Opcode.rmdir.rawValue, FUSE_RMDIR.rawValue)
        XCTAssertEqual(Opcode.rename.rawValue, FUSE_RENAME.rawValue)
        XCTAssertEqual(Opcode.link.rawValue, FUSE_LINK.rawValue)
        XCTAssertEqual(Opcode.open.rawValue, FUSE_OPEN.rawValue)
        XCTAssertEqual(Opcode.read.rawValue, FUSE_READ.rawValue)
        XCTAssertEqual(Opcode.write.rawValue, FUSE_WRITE.rawValue)
        XCTAssertEqual(Opcode.statfs.rawValue, FUSE_STATFS.rawValue)
        XCTAssertEqual(Opcode.release.rawValue, FUSE_RELEASE.rawValue)
        XCTAssertEqual(Opcode.fsync.rawValue, FUSE_FSYNC.rawValue)
        XCTAssertEqual(Opcode.setxattr.rawValue, FUSE_SETXATTR.rawValue)
        XCTAssertEqual(Opcode.getxattr.rawValue, FUSE_GETXATTR.rawValue)
        XCTAssertEqual(Opcode.listxattr.rawValue, FUSE_LISTXATTR.rawValue)
        XCTAssertEqual(Opcode.removexattr.rawValue, FUSE_REMOVEXATTR.rawValue)
        XCTAssertEqual(Opcode.flush.rawValue, FUSE_FLUSH.rawValue)
        XCTAssertEqual(Opcode.initialize.rawValue, FUSE_INIT.rawValue)
        XCTAssertEqual(Opcode.opendir.rawValue, FUSE_OPENDIR.rawValue)
        XCTAssertEqual(Opcode.readdir.rawValue, FUSE_READDIR.rawValue)
        XCTAssertEqual(Opcode.releasedir.rawValue, FUSE_RELEASEDIR.rawValue)
        XCTAssertEqual(Opcode.fsyncdir.rawValue, FUSE_FSYNCDIR.rawValue)
        XCTAssertEqual(Opcode.getlk.rawValue, FUSE_GETLK.rawValue)
        XCTAssertEqual(Opcode.setlk.rawValue, FUSE_SETLK.rawValue)
        XCTAssertEqual(Opcode.setlkw.rawValue, FUSE_SETLKW.rawValue)
        XCTAssertEqual(Opcode.access.rawValue, FUSE_ACCESS.rawValue)
        XCTAssertEqual(Opcode.create.rawValue, FUSE_CREATE.rawValue)
        XCTAssertEqual(Opcode.interrupt.rawValue, FUSE_INTERRUPT.rawValue)
        XCTAssertEqual(Opcode.bmap.rawValue, FUSE_BMAP.rawValue)
        XCTAssertEqual(Opcode.destroy.rawValue, FUSE_DESTROY.rawValue)
        XCTAssertEqual(Opcode.ioctl.rawValue, FUSE_IOCTL.rawValue)
        XCTAssertEqual(Opcode.poll.rawValue, FUSE_POLL.rawValue)
        XCTAssertEqual(Opcode.notifyReply.rawValue, FUSE_NOTIFY_REPLY.rawValue)
        XCTAssertEqual(Opcode.batchForget.rawValue, FUSE_BATCH_FORGET.rawValue)
        XCTAssertEqual(Opcode.fallocate.rawValue, FUSE_FALLOCATE.rawValue)
        XCTAssertEqual(Opcode.readdirplus.rawValue, FUSE_READDIRPLUS.rawValue)
        XCTAssertEqual(Opcode.rename2.rawValue, FUSE_RENAME2.rawValue)
        XCTAssertEqual(Opcode.lseek.rawValue, FUSE_LSEEK.rawValue)
        XCTAssertEqual(Opcode.copyFileRange.rawValue, FUSE_COPY_FILE_RANGE.rawValue)
        XCTAssertEqual(Opcode.setupMapping.rawValue, FUSE_SETUPMAPPING.rawValue)
        XCTAssertEqual(Opcode.removeMapping.rawValue, FUSE_REMOVEMAPPING.rawValue)
        XCTAssertEqual(Opcode.syncfs.rawValue, FUSE_SYNCFS.rawValue)
        XCTAssertEqual(Opcode.tmpfile.rawValue, FUSE_TMPFILE.rawValue)
        XCTAssertEqual(Set(Opcode.allCases.map(\.name)).count, Opcode.allCases.count)
    }

    func testEveryOpcodeDecodesItsArgumentsAndEncodesItsReply() {
        var setattr = fuse_setattr_in()
        setattr.valid = UInt32(FATTR_MODE | FATTR_SIZE | FATTR_ATIME | FATTR_MTIME | FATTR_FH | FATTR_LOCKOWNER)
        setattr.fh = 31
        setattr.size = 4096
        setattr.lock_owner = 17
        setattr.atime = 100
        setattr.atimensec = 5
        setattr.mtime = 200
        setattr.mtimensec = 6
        setattr.mode = 0o600
        setattr.uid = 11
        setattr.gid = 12

        let cases: [Case] = [
            Case(name: "LOOKUP", request: Request(.lookup, cstr("foo")),
                 call: "lookup u1000 g100 p4242 #77 parent=5 name=foo", payload: entryBytes(10)),
            Case(name: "GETATTR with fh", request: Request(.getattr, bytes(of: fuse_getattr_in(getattr_flags: UInt32(FUSE_GETATTR_FH), dummy: 0, fh: 33))),
                 call: "getattr node=5 handle=33", payload: attrBytes(5, Timeout(seconds: 7, nanoseconds: 8))),
            Case(name: "GETATTR without fh", request: Request(.getattr, bytes(of: fuse_getattr_in(getattr_flags: 0, dummy: 0, fh: 33))),
                 call: "getattr node=5 handle=nil", payload: attrBytes(5, Timeout(seconds: 7, nanoseconds: 8))),
            Case(name: "SETATTR", request: Request(.setattr, bytes(of: setattr)),
                 call: "setattr node=5 valid=\(setattr.valid) mode=600 uid=11 gid=12 size=4096 atime=100.5 mtime=200.6 handle=31 owner=17",
                 payload: attrBytes(5, Timeout(seconds: 1))),
            Case(name: "READLINK", request: Request(.readlink),
                 call: "readlink node=5 capacity=4096", payload: Array("target/path".utf8)),
            Case(name: "SYMLINK", request: Request(.symlink, cstr("ln"), cstr("dest/x")),
                 call: "symlink parent=5 name=ln target=dest/x", payload: entryBytes(11)),
            Case(name: "MKNOD", request: Request(.mknod, bytes(of: fuse_mknod_in(mode: S_IFIFO | 0o644, rdev: 0x801, umask: 0o22, padding: 0)), cstr("fifo")),
                 call: "mknod parent=5 name=fifo mode=10644 rdev=2049 umask=22", payload: entryBytes(12)),
            Case(name: "MKDIR", request: Request(.mkdir, bytes(of: fuse_mkdir_in(mode: 0o755, umask: 0o27)), cstr("dir")),
                 call: "mkdir parent=5 name=dir mode=755 umask=27", payload: entryBytes(13)),
            Case(name: "UNLINK", request: Request(.unlink, cstr("gone")), call: "unlink parent=5 name=gone", payload: []),
            Case(name: "RMDIR", request: Request(.rmdir, cstr("dir")), call: "rmdir parent=5 name=dir", payload: []),
            Case(name: "RENAME", request: Request(.rename, bytes(of: fuse_rename_in(newdir: 6)), cstr("a"), cstr("b")),
                 call: "rename 5/a -> 6/b flags=0", payload: []),
            Case(name: "RENAME2", request: Request(.rename2, bytes(of: fuse_rename2_in(newdir: 6, flags: 2, padding: 0)), cstr("a"), cstr("b")),
                 call: "rename 5/a -> 6/b flags=2", payload: []),
            Case(name: "LINK", request: Request(.link, bytes(of: fuse_link_in(oldnodeid: 8)), cstr("hard")),
                 call: "link node=8 -> 5/hard", payload: entryBytes(8)),
            Case(name: "OPEN", request: Request(.open, bytes(of: fuse_open_in(flags: UInt32(O_RDWR), open_flags: UInt32(FUSE_OPEN_KILL_SUIDGID)))),
                 call: "open node=5 flags=2 kill=true", payload: openBytes(99, .keepCache)),
            Case(name: "READ", request: Request(.read, bytes(of: fuse_read_in(fh: 99, offset: 100, size: 5, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))),
                 call: "read node=5 fh=99 off=100 size=5", payload: Array("hello".utf8)),
            Case(name: "WRITE", request: Request(.write, bytes(of: fuse_write_in(fh: 99, offset: 7, size: 3, write_flags: UInt32(FUSE_WRITE_KILL_SUIDGID), lock_owner: 0, flags: UInt32(O_APPEND), padding: 0)), Array("abc".utf8)),
                 call: "write node=5 fh=99 off=7 flags=\(O_APPEND) kill=true data=abc", payload: bytes(of: fuse_write_out(size: 3, padding: 0))),
            Case(name: "STATFS", request: Request(.statfs), call: "statfs node=5",
                 payload: bytes(of: fuse_kstatfs(blocks: 100, bfree: 50, bavail: 40, files: 1000, ffree: 900, bsize: 4096, namelen: 255, frsize: 512, padding: 0, spare: (0, 0, 0, 0, 0, 0)))),
            Case(name: "RELEASE", request: Request(.release, bytes(of: fuse_release_in(fh: 99, flags: 2, release_flags: UInt32(FUSE_RELEASE_FLUSH), lock_owner: 0x1234))),
                 call: "release node=5 fh=99 flags=2 owner=4660 flush=true flock=false", payload: []),
            Case(name: "RELEASE without owner", request: Request(.release, bytes(of: fuse_release_in(fh: 99, flags: 0, release_flags: 0, lock_owner: 0x1234))),
                 call: "release node=5 fh=99 flags=0 owner=nil flush=false flock=false", payload: []),
            Case(name: "FSYNC", request: Request(.fsync, bytes(of: fuse_fsync_in(fh: 99, fsync_flags: UInt32(FUSE_FSYNC_FDATASYNC), padding: 0))),
                 call: "fsync node=5 fh=99 datasync=true", payload: []),
            Case(name: "SETXATTR compat", request: Request(.setxattr, bytes(of: UInt32(3)), bytes(of: UInt32(1)), cstr("user.x"), Array("abc".utf8)),
                 call: "setxattr node=5 name=user.x value=abc flags=1 ext=0", payload: []),
            Case(name: "GETXATTR size", request: Request(.getxattr, bytes(of: fuse_getxattr_in(size: 0, padding: 0)), cstr("user.x")),
                 call: "getxattr node=5 name=user.x capacity=nil", payload: bytes(of: fuse_getxattr_out(size: 5, padding: 0))),
            Case(name: "GETXATTR value", request: Request(.getxattr, bytes(of: fuse_getxattr_in(size: 100, padding: 0)), cstr("user.x")),
                 call: "getxattr node=5 name=user.x capacity=100", payload: Array("value".utf8)),
            Case(name: "LISTXATTR size", request: Request(.listxattr, bytes(of: fuse_getxattr_in(size: 0, padding: 0))),
                 call: "listxattr node=5 capacity=nil", payload: bytes(of: fuse_getxattr_out(size: 14, padding: 0))),
            Case(name: "LISTXATTR names", request: Request(.listxattr, bytes(of: fuse_getxattr_in(size: 14, padding: 0))),
                 call: "listxattr node=5 capacity=14", payload: cstr("user.a") + cstr("user.b")),
            Case(name: "REMOVEXATTR", request: Request(.removexattr, cstr("user.x")), call: "removexattr node=5 name=user.x", payload: []),
            Case(name: "FLUSH", request: Request(.flush, bytes(of: fuse_flush_in(fh: 99, unused: 0, padding: 0, lock_owner: 77))),
                 call: "flush node=5 fh=99 owner=77", payload: []),
            Case(name: "OPENDIR", request: Request(.opendir, bytes(of: fuse_open_in(flags: UInt32(O_DIRECTORY), open_flags: 0))),
                 call: "opendir node=5 flags=\(O_DIRECTORY)", payload: openBytes(55, .cacheDirectory)),
            Case(name: "READDIR empty", request: Request(.readdir, bytes(of: fuse_read_in(fh: 55, offset: 0, size: 4096, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))),
                 call: "readdir node=5 fh=55 off=0 plus=false", payload: []),
            Case(name: "READDIRPLUS empty", request: Request(.readdirplus, bytes(of: fuse_read_in(fh: 55, offset: 3, size: 4096, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))),
                 call: "readdir node=5 fh=55 off=3 plus=true", payload: []),
            Case(name: "RELEASEDIR", request: Request(.releasedir, bytes(of: fuse_release_in(fh: 55, flags: 4, release_flags: 0, lock_owner: 0))),
                 call: "releasedir node=5 fh=55 flags=4", payload: []),
            Case(name: "FSYNCDIR", request: Request(.fsyncdir, bytes(of: fuse_fsync_in(fh: 55, fsync_flags: 0, padding: 0))),
                 call: "fsyncdir node=5 fh=55 datasync=false", payload: []),
            Case(name: "GETLK", request: Request(.getlk, bytes(of: fuse_lk_in(fh: 99, owner: 5, lk: fuse_file_lock(start: 0, end: 100, type: UInt32(F_RDLCK), pid: 42), lk_flags: 0, padding: 0))),
                 call: "getlk node=5 fh=99 owner=5 0-100 type=\(F_RDLCK) pid=42",
                 payload: bytes(of: fuse_lk_out(lk: fuse_file_lock(start: 10, end: 20, type: UInt32(F_WRLCK), pid: 321)))),
            Case(name: "SETLK flock", request: Request(.setlk, bytes(of: fuse_lk_in(fh: 99, owner: 5, lk: fuse_file_lock(start: 0, end: UInt64.max, type: UInt32(F_WRLCK), pid: 42), lk_flags: UInt32(FUSE_LK_FLOCK), padding: 0))),
                 call: "setlk node=5 fh=99 owner=5 0-\(UInt64.max) type=\(F_WRLCK) wait=false flock=true", payload: []),
            Case(name: "SETLKW", request: Request(.setlkw, bytes(of: fuse_lk_in(fh: 99, owner: 5, lk: fuse_file_lock(start: 1, end: 2, type: UInt32(F_UNLCK), pid: 42), lk_flags: 0, padding: 0))),
                 call: "setlk node=5 fh=99 owner=5 1-2 type=\(F_UNLCK) wait=true flock=false", payload: []),
            Case(name: "ACCESS", request: Request(.access, bytes(of: fuse_access_in(mask: 4, padding: 0))), call: "access node=5 mask=4", payload: []),
            Case(name: "CREATE", request: Request(.create, bytes(of: fuse_create_in(flags: UInt32(O_WRONLY | O_CREAT), mode: S_IFREG | 0o644, umask: 0o22, open_flags: 0)), cstr("new")),
                 call: "create parent=5 name=new mode=100644 flags=\(O_WRONLY | O_CREAT) umask=22", payload: entryBytes(14) + openBytes(98, .directIO)),
            Case(name: "TMPFILE", request: Request(.tmpfile, bytes(of: fuse_create_in(flags: UInt32(O_RDWR), mode: S_IFREG | 0o600, umask: 0o77, open_flags: 0))),
                 call: "tmpfile parent=5 mode=100600 flags=2 umask=77", payload: entryBytes(15) + openBytes(97, [])),
            Case(name: "FALLOCATE", request: Request(.fallocate, bytes(of: fuse_fallocate_in(fh: 99, offset: 10, length: 20, mode: 1, padding: 0))),
                 call: "fallocate node=5 fh=99 mode=1 off=10 len=20", payload: []),
            Case(name: "LSEEK", request: Request(.lseek, bytes(of: fuse_lseek_in(fh: 99, offset: 3, whence: 3, padding: 0))),
                 call: "lseek node=5 fh=99 off=3 whence=3", payload: bytes(of: fuse_lseek_out(offset: 4096))),
            Case(name: "COPY_FILE_RANGE", request: Request(.copyFileRange, bytes(of: fuse_copy_file_range_in(fh_in: 99, off_in: 1, nodeid_out: 6, fh_out: 98, off_out: 2, len: 5000, flags: 0))),
                 call: "copy 5/99@1 -> 6/98@2 len=5000 flags=0", payload: bytes(of: fuse_write_out(size: 1000, padding: 0))),
            Case(name: "SYNCFS", request: Request(.syncfs, bytes(of: fuse_syncfs_in(padding: 0))), call: "syncfs node=5", payload: []),
        ]

        for c in cases {
            let fs = RecordingFS()
            let server = initializedServer(fs)
            let reply = send(server, c.request)
            XCTAssertEqual(fs.calls.dropFirst().first, c.call, c.name, file: c.file, line: c.line)
            XCTAssertEqual(fs.calls.count, 2, "\(c.name): \(fs.calls)", file: c.file, line: c.line)
            XCTAssertEqual(reply.length, 16 + c.payload.count, c.name, file: c.file, line: c.line)
            XCTAssertEqual(reply.header.map { Int($0.len) }, reply.length, "\(c.name): header length", file: c.file, line: c.line)
            XCTAssertEqual(reply.error, 0, c.name, file: c.file, line: c.line)
            XCTAssertEqual(reply.header?.unique, 77, c.name, file: c.file, line: c.line)
            XCTAssertEqual(reply.payload, c.payload, "\(c.name): payload", file: c.file, line: c.line)
        }
    }

    func testExtendedSetxattrStructIsReadWhenNegotiated() {
        let fs = RecordingFS()
        fs.wanted = [.setxattrExt]
        let server = initializedServer(fs)
        XCTAssertTrue(server.negotiatedFlags.contains(.setxattrExt))
        let reply = send(server, Request(.setxattr, bytes(of: fuse_setxattr_in(size: 3, flags: 2, setxattr_flags: UInt32(FUSE_SETXATTR_ACL_KILL_SGID), padding: 0)),
                                         cstr("system.posix_acl_access"), Array("xyz".utf8)))
        XCTAssertEqual(reply.error, 0)
        XCTAssertEqual(fs.calls.last, "setxattr node=5 name=system.posix_acl_access value=xyz flags=2 ext=1")
    }

    func testForgetsAndInterruptAreNeverAnswered() {
        let fs = RecordingFS()
        let server = initializedServer(fs)
        XCTAssertEqual(send(server, Request(.forget, nodeid: 8, bytes(of: fuse_forget_in(nlookup: 3)))).length, 0)
        let batch = Request(.batchForget, nodeid: 0, bytes(of: fuse_batch_forget_in(count: 2, dummy: 0)),
                            bytes(of: fuse_forget_one(nodeid: 9, nlookup: 1)), bytes(of: fuse_forget_one(nodeid: 10, nlookup: 2)))
        XCTAssertEqual(send(server, batch).length, 0)
        XCTAssertEqual(send(server, Request(.interrupt, nodeid: 0, bytes(of: fuse_interrupt_in(unique: 3)))).length, 0)
        XCTAssertEqual(fs.calls, ["init", "forget 8 3", "forget 9 1", "forget 10 2"])
    }

    func testBatchForgetWithACountLargerThanItsPayloadForgetsNothing() {
        let fs = RecordingFS()
        let server = initializedServer(fs)
        let lying = Request(.batchForget, nodeid: 0, bytes(of: fuse_batch_forget_in(count: 3, dummy: 0)),
                            bytes(of: fuse_forget_one(nodeid: 9, nlookup: 1)))
        XCTAssertEqual(send(server, lying).length, 0)
        let huge = Request(.batchForget, nodeid: 0, bytes(of: fuse_batch_forget_in(count: UInt32.max, dummy: 0)))
        XCTAssertEqual(send(server, huge).length, 0)
        XCTAssertEqual(fs.calls, ["init"])
    }

    func testUnsupportedOpcodesGetENOSYSAndIoctlGetsENOTTY() {
        let fs = RecordingFS()
        let server = initializedServer(fs)
        for op: UInt32 in [FUSE_BMAP.rawValue, FUSE_POLL.rawValue, FUSE_SETUPMAPPING.rawValue, FUSE_REMOVEMAPPING.rawValue, 7, 999, 4096] {
            let reply = send(server, Request(rawOpcode: op, [UInt8](repeating: 0, count: 40)))
            XCTAssertEqual(reply.error, -ENOSYS, "opcode \(op)")
            XCTAssertEqual(reply.length, 16)
        }
        let ioctl = send(server, Request(.ioctl, bytes(of: fuse_ioctl_in())))
        XCTAssertEqual(ioctl.error, -ENOTTY)
        XCTAssertEqual(fs.calls, ["init"])
    }

    func testFilesystemErrorsBecomeNegativeErrnoReplies() {
        let fs = RecordingFS()
        let server = initializedServer(fs)
        fs.failure = .noEntry
        let reply = send(server, Request(.lookup, cstr("missing")))
        XCTAssertEqual(reply.length, 16)
        XCTAssertEqual(reply.error, -ENOENT)
        XCTAssertEqual(reply.header?.len, 16)
        XCTAssertEqual(reply.header?.unique, 77)
    }

    func testFailedReadRewritesItsHeaderAsAnError() {
        let fs = RecordingFS()
        let server = initializedServer(fs)
        fs.failure = .ioError
        let reply = send(server, Request(.read, bytes(of: fuse_read_in(fh: 1, offset: 0, size: 10, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))))
        XCTAssertEqual(reply.length, 16)
        XCTAssertEqual(reply.error, -EIO)
        XCTAssertEqual(reply.header?.len, 16)
    }

    func testReleaseIsAnsweredEvenWhenTheFilesystemFails() {
        let fs = RecordingFS()
        let server = initializedServer(fs)
        fs.failure = .badFileDescriptor
        let reply = send(server, Request(.release, bytes(of: fuse_release_in(fh: 1, flags: 0, release_flags: 0, lock_owner: 0))))
        XCTAssertEqual(reply.length, 16)
        XCTAssertEqual(reply.error, 0)
    }

    func testShortReadReplyCarriesOnlyTheBytesRead() {
        let fs = RecordingFS()
        let server = initializedServer(fs)
        let reply = send(server, Request(.read, bytes(of: fuse_read_in(fh: 1, offset: 0, size: 4096, read_flags: 0, lock_owner: 0, flags: 0, padding: 0))))
        XCTAssertEqual(reply.length, 16 + 12)
        XCTAssertEqual(reply.header?.len, 28)
        XCTAssertEqual(reply.payload, Array("hello, world".utf8))
    }

    func testRequestExtensionsReachCreatingOperations() {
        let ext = securityContextExtension(name: "security.selinux", value: Array("system_u:object_r:tmp_t:s0".utf8) + [0]) + groupsExtension(4321)
        let requests: [(String, Request)] = [
            ("create", Request(.create, bytes(of: fuse_create_in(flags: 0, mode: 0o644, umask: 0o22, open_flags: 0)), cstr("f"))),
            ("mkdir", Request(.mkdir, bytes(of: fuse_mkdir_in(mode: 0o755, umask: 0o22)), cstr("d"))),
            ("mknod", Request(.mknod, bytes(of: fuse_mknod_in(mode: S_IFIFO | 0o644, rdev: 0, umask: 0o22, padding: 0)), cstr("p"))),
            ("symlink", Request(.symlink, cstr("l"), cstr("target"))),
            ("tmpfile", Request(.tmpfile, bytes(of: fuse_create_in(flags: 0, mode: 0o644, umask: 0o22, open_flags: 0)))),
        ]
        for (name, base) in requests {
            let fs = RecordingFS()
            fs.wanted = [.securityContext, .createSuppGroup]
            let server = initializedServer(fs)
            var request = base
            request.extensions = ext
            let reply = send(server, request)
            XCTAssertEqual(reply.error, 0, name)
            XCTAssertEqual(fs.lastExtras?.contextName, "security.selinux", name)
            XCTAssertEqual(fs.lastExtras?.contextValue, Array("system_u:object_r:tmp_t:s0".utf8) + [0], name)
            XCTAssertEqual(fs.lastExtras?.group, 4321, name)
            XCTAssertEqual(fs.lastExtras?.umask, name == "symlink" ? 0 : 0o22, name)
        }
    }

    func testTmpfileIgnoresWhateverNameTheKernelSends() {
        // The kernel's tmpfile dentry has a placeholder name; the new file has none.
        let fs = RecordingFS()
        let server = initializedServer(fs)
        var request = Request(.tmpfile, bytes(of: fuse_create_in(flags: 2, mode: 0o600, umask: 0o22, open_flags: 0)), cstr("/"))
        request.extensions = groupsExtension(7)
        XCTAssertEqual(send(server, request).error, 0)
        XCTAssertEqual(fs.calls.last, "tmpfile parent=5 mode=600 flags=2 umask=22")
        XCTAssertEqual(fs.lastExtras?.group, 7)
    }

    func testEmptySecurityContextHeaderMeansNoContext() {
        let fs = RecordingFS()
        let server = initializedServer(fs)
        var request = Request(.mkdir, bytes(of: fuse_mkdir_in(mode: 0o755, umask: 0)), cstr("d"))
        request.extensions = bytes(of: fuse_secctx_header(size: 8, nr_secctx: 0))
        XCTAssertEqual(send(server, request).error, 0)
        XCTAssertNil(fs.lastExtras?.contextName)
        XCTAssertNil(fs.lastExtras?.group)
    }

    func testStatBecomesFuseAttrFieldByField() {
        let attr = fuse_attr(testStat(ino: 42, mode: S_IFCHR | 0o620, size: 77))
        XCTAssertEqual(attr.ino, 42)
        XCTAssertEqual(attr.size, 77)
        XCTAssertEqual(attr.blocks, 8)
        XCTAssertEqual(attr.atime, 1_700_000_001)
        XCTAssertEqual(attr.atimensec, 11)
        XCTAssertEqual(attr.mtime, 1_700_000_002)
        XCTAssertEqual(attr.mtimensec, 22)
        XCTAssertEqual(attr.ctime, 1_700_000_003)
        XCTAssertEqual(attr.ctimensec, 33)
        XCTAssertEqual(attr.mode, S_IFCHR | 0o620)
        XCTAssertEqual(attr.nlink, 2)
        XCTAssertEqual(attr.uid, 1000)
        XCTAssertEqual(attr.gid, 100)
        XCTAssertEqual(attr.rdev, (8 << 8) | 1, "new_encode_dev(8, 1)")
        XCTAssertEqual(attr.blksize, 4096)

        let entry = fuse_entry_out(testEntry(10))
        XCTAssertEqual(entry.nodeid, 10)
        XCTAssertEqual(entry.generation, 9)
        XCTAssertEqual(entry.entry_valid, 5)
        XCTAssertEqual(entry.entry_valid_nsec, 6)
        XCTAssertEqual(entry.attr_valid, 3)
        XCTAssertEqual(entry.attr_valid_nsec, 4)
        XCTAssertEqual(entry.attr.ino, 1010)
    }

    func testSubmountFlagOfAnEntryReachesTheKernel() {
        var e = testEntry(3)
        e.attributeFlags = UInt32(FUSE_ATTR_SUBMOUNT)
        XCTAssertEqual(fuse_entry_out(e).attr.flags, UInt32(FUSE_ATTR_SUBMOUNT))
    }
}
