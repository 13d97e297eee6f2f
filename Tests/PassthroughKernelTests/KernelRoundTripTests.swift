import XCTest
import Foundation
import Glibc
import CVirtioFS
import FUSE
import HostFUSE
import Posix
import Options
import Passthrough

/// Real programs' system calls, through the kernel's FUSE client, the dispatcher
/// and the passthrough backend, onto a temporary shared directory.
final class KernelRoundTripTests: KernelMountTestCase {
    func testFilesDirectoriesAndLinksThroughTheKernel() throws {
        try mount()
        // create + write + read back, on both sides
        XCTAssertTrue(FileManager.default.createFile(atPath: m("hello.txt"), contents: Data("hello".utf8)))
        XCTAssertEqual(try String(contentsOfFile: h("hello.txt"), encoding: .utf8), "hello")
        XCTAssertEqual(try String(contentsOfFile: m("hello.txt"), encoding: .utf8), "hello")
        // append and truncate
        let fd = open(m("hello.txt"), O_WRONLY | O_APPEND)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(Glibc.write(fd, " world", 6), 6)
        XCTAssertEqual(ftruncate(fd, 8), 0)
        close(fd)
        XCTAssertEqual(try String(contentsOfFile: h("hello.txt"), encoding: .utf8), "hello wo")
        // directories, rename, hard and symbolic links
        XCTAssertEqual(mkdir(m("dir"), 0o750), 0)
        XCTAssertEqual(hostMode("dir") & 0o777, 0o750)
        XCTAssertEqual(rename(m("hello.txt"), m("dir/moved.txt")), 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: h("dir/moved.txt")))
        XCTAssertEqual(link(m("dir/moved.txt"), m("hard")), 0)
        var st = stat()
        XCTAssertEqual(stat(m("hard"), &st), 0)
        XCTAssertEqual(st.st_nlink, 2)
        XCTAssertEqual(symlink("dir/moved.txt", m("soft")), 0)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: m("soft")), "dir/moved.txt")
        XCTAssertEqual(try String(contentsOfFile: m("soft"), encoding: .utf8), "hello wo", "the guest side follows its own links")
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: mountpoint)), ["dir", "hard", "soft"])
        // chmod and times
        XCTAssertEqual(chmod(m("hard"), 0o600), 0)
        XCTAssertEqual(hostMode("hard") & 0o777, 0o600)
        var times = [timespec(tv_sec: 100, tv_nsec: 5), timespec(tv_sec: 200, tv_nsec: 7)]
        XCTAssertEqual(utimensat(AT_FDCWD, m("hard"), &times, 0), 0)
        XCTAssertEqual(stat(h("hard"), &st), 0)
        XCTAssertEqual(st.st_mtim.tv_sec, 200)
        XCTAssertEqual(st.st_mtim.tv_nsec, 7)
        // removal
        XCTAssertEqual(unlink(m("soft")), 0)
        XCTAssertEqual(unlink(m("hard")), 0)
        XCTAssertEqual(rmdir(m("dir")), -1)
        XCTAssertEqual(errno, ENOTEMPTY)
        XCTAssertEqual(unlink(m("dir/moved.txt")), 0)
        XCTAssertEqual(rmdir(m("dir")), 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: h("")), [])
    }

    func testABigDirectoryListsCompletelyWithFewDescriptors() throws {
        try mount { $0.fdBudget = 16 }
        for i in 0..<2000 { close(open(h("f\(i)"), O_CREAT | O_WRONLY, 0o644)) }
        let listed = try FileManager.default.contentsOfDirectory(atPath: mountpoint)
        XCTAssertEqual(listed.count, 2000)
        XCTAssertEqual(Set(listed).count, 2000)
        // stat every entry: a lookup each, most held as file handles
        var st = stat()
        for name in listed { XCTAssertEqual(stat(m(name), &st), 0, name) }
    }

    func testXattrsAndLocksThroughTheKernel() throws {
        try mount()
        XCTAssertTrue(FileManager.default.createFile(atPath: m("x"), contents: Data("x".utf8)))
        XCTAssertEqual(cvfs_setxattr(m("x"), "user.k", "value", 5, 0), 0)
        var buffer = [UInt8](repeating: 0, count: 32)
        XCTAssertEqual(cvfs_getxattr(h("x"), "user.k", &buffer, 32), 5)
        XCTAssertEqual(cvfs_getxattr(m("x"), "user.k", nil, 0), 5)
        XCTAssertEqual(cvfs_getxattr(m("x"), "user.k", &buffer, 2), -1)
        XCTAssertEqual(errno, ERANGE)
        XCTAssertEqual(cvfs_removexattr(m("x"), "user.k"), 0)
        XCTAssertEqual(cvfs_getxattr(h("x"), "user.k", &buffer, 32), -1)
        XCTAssertEqual(errno, ENODATA)
        // flock between two open files
        let a = open(m("x"), O_RDWR)
        let b = open(m("x"), O_RDWR)
        defer { close(a); close(b) }
        XCTAssertEqual(cvfs_flock(a, LOCK_EX | LOCK_NB), 0)
        XCTAssertEqual(cvfs_flock(b, LOCK_EX | LOCK_NB), -1)
        XCTAssertEqual(errno, EWOULDBLOCK)
        XCTAssertEqual(cvfs_flock(a, LOCK_UN), 0)
        XCTAssertEqual(cvfs_flock(b, LOCK_EX | LOCK_NB), 0)
    }

    func testASymlinkToTheHostRootIsJustASymlink() throws {
        try mount()
        XCTAssertEqual(symlink("/", h("escape")), 0)
        var st = stat()
        XCTAssertEqual(lstat(m("escape"), &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFLNK)
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: m("escape")), "/")
        // "..": the mount's root is its own parent from the filesystem's point of view.
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: m("."))), ["escape"])
    }

    func testLargeFilesRoundTripInEveryCacheMode() throws {
        let payload = Data((0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        for mode in [CacheMode.never, .metadata, .auto, .always] {
            try mount { $0.cache = mode; $0.writeback = mode == .always }
            XCTAssertTrue(FileManager.default.createFile(atPath: m("big"), contents: payload), "\(mode)")
            XCTAssertEqual(FileManager.default.contents(atPath: h("big")), payload, "host side, \(mode)")
            XCTAssertEqual(FileManager.default.contents(atPath: m("big")), payload, "guest side, \(mode)")
            // A write-only O_APPEND open still appends (with writeback the kernel does it).
            let fd = open(m("big"), O_WRONLY | O_APPEND)
            XCTAssertEqual(Glibc.write(fd, "END", 3), 3)
            close(fd)
            XCTAssertEqual(FileManager.default.contents(atPath: h("big"))?.suffix(3), Data("END".utf8), "\(mode)")
            tearDown()
        }
    }

    func testPosixACLsAndTheGuestUmask() throws {
        try mount { $0.posixACL = true }
        // A separate process: this one shares the daemon's umask (0).
        let shell = Process()
        shell.executableURL = URL(fileURLWithPath: "/bin/sh")
        shell.arguments = ["-c", "umask 027 && mkdir \"$0\"", m("d")]
        try shell.run()
        shell.waitUntilExit()
        XCTAssertEqual(shell.terminationStatus, 0)
        XCTAssertEqual(hostMode("d") & 0o777, 0o750, "the caller's umask, applied by the daemon (DONT_MASK)")
        let tool = Process()
        tool.executableURL = URL(fileURLWithPath: "/usr/bin/setfacl")
        tool.arguments = ["-d", "-m", "u::rwx,g::rwx,o::rwx", m("d")]
        try tool.run()
        tool.waitUntilExit()
        XCTAssertEqual(tool.terminationStatus, 0)
        XCTAssertEqual(mkdir(m("d/inner"), 0o777), 0)
        XCTAssertEqual(hostMode("d/inner") & 0o777, 0o777, "a default ACL replaces the umask")
    }

    func hostMode(_ relative: String) -> mode_t {
        var st = stat()
        XCTAssertEqual(lstat(h(relative), &st), 0)
        return st.st_mode
    }
}
