import XCTest
import Foundation
import Glibc
import Posix
import Options
import Passthrough

/// Setuid/setgid after writes and truncates by a guest user, through the kernel's FUSE
/// client, for each cache mode with killpriv v2 on and off: the guest kernel clears
/// nothing itself for direct I/O, and loses its own mode change when OPEN truncates.
final class SetIDThroughTheKernelTests: KernelMountTestCase {
    func hostFile(_ relative: String, mode: mode_t, uid: uid_t = 0) {
        XCTAssertTrue(FileManager.default.createFile(atPath: h(relative), contents: Data("contents".utf8)))
        XCTAssertEqual(chown(h(relative), uid, uid), 0)
        XCTAssertEqual(chmod(h(relative), mode), 0)
    }

    func hostMode(_ relative: String) -> mode_t {
        var st = stat()
        XCTAssertEqual(lstat(h(relative), &st), 0)
        return st.st_mode & 0o7777
    }

    func writeOne(_ path: String, flags: Int32 = O_WRONLY) -> Bool {
        let fd = open(path, flags)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return Glibc.write(fd, "x", 1) == 1
    }

    func check(_ cache: CacheMode, killprivV2: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        try mount { $0.cache = cache; $0.killprivV2 = killprivV2 }
        hostFile("written", mode: 0o4777)
        hostFile("opened-trunc", mode: 0o6777)
        hostFile("truncated", mode: 0o6777)
        hostFile("own", mode: 0o4777, uid: 1000)
        hostFile("by-root", mode: 0o6777)
        let label = "cache \(cache), killpriv v2 \(killprivV2 ? "on" : "off")"
        try asUser(1000, 1000) {
            XCTAssertTrue(writeOne(m("written")), "write as uid 1000, \(label)", file: file, line: line)
            let fd = open(m("opened-trunc"), O_WRONLY | O_TRUNC)
            XCTAssertGreaterThanOrEqual(fd, 0, "open O_TRUNC as uid 1000, \(label)", file: file, line: line)
            close(fd)
            XCTAssertEqual(truncate(m("truncated"), 1), 0, "truncate as uid 1000, \(label)", file: file, line: line)
            XCTAssertTrue(writeOne(m("own")), "write by the owner, \(label)", file: file, line: line)
        }
        XCTAssertTrue(writeOne(m("by-root"), flags: O_WRONLY | O_TRUNC), label, file: file, line: line)

        XCTAssertEqual(hostMode("written"), 0o0777, "a non-owner's write, \(label)", file: file, line: line)
        XCTAssertEqual(hostMode("opened-trunc"), 0o0777, "a non-owner's O_TRUNC, \(label)", file: file, line: line)
        XCTAssertEqual(hostMode("truncated"), 0o0777, "a non-owner's truncate(2), \(label)", file: file, line: line)
        // As on any Linux filesystem, the owner without CAP_FSETID loses setuid on write too.
        XCTAssertEqual(hostMode("own"), 0o0777, "the owner's write, \(label)", file: file, line: line)
        XCTAssertEqual(hostMode("by-root"), 0o6777, "root (CAP_FSETID) keeps them, \(label)", file: file, line: line)
    }

    func testNoneWithoutKillprivV2() throws { try check(.never, killprivV2: false) }
    func testNoneWithKillprivV2() throws { try check(.never, killprivV2: true) }
    func testMetadataWithoutKillprivV2() throws { try check(.metadata, killprivV2: false) }
    func testMetadataWithKillprivV2() throws { try check(.metadata, killprivV2: true) }
    func testAutoWithoutKillprivV2() throws { try check(.auto, killprivV2: false) }
    func testAutoWithKillprivV2() throws { try check(.auto, killprivV2: true) }
    func testAlwaysWithoutKillprivV2() throws { try check(.always, killprivV2: false) }
    func testAlwaysWithKillprivV2() throws { try check(.always, killprivV2: true) }
}
