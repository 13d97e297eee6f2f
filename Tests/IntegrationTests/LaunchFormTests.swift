import Foundation
import XCTest
import CVirtioFS
import Posix
import VhostUserFrontend

/// The command lines libvirt builds: it creates and listens on the socket itself and
/// hands it over as `--fd=N`. Each form must serve INIT, LOOKUP and READ through the
/// inherited socket and exit 0 when the frontend goes away.
final class LaunchFormTests: XCTestCase {
    /// The descriptor number the daemon inherits the socket as (libvirt picks any free one).
    static let inheritedNumber: Int32 = 77

    /// Starts the daemon with `arguments(N, sharedPath)` on a socket the test listens on,
    /// then reads a file through it and disconnects.
    private func serveThroughInheritedSocket(sharedName: String = "shared",
                                             _ arguments: (Int32, String) -> [String],
                                             file: StaticString = #filePath, line: UInt = #line) throws {
        let content = "through an inherited socket"
        let scratch = try Scratch(sharedName: sharedName, files: ["f": content])
        let listener = try Sys.unixStreamSocket()
        defer { Sys.close(listener) }
        try Sys.bind(listener, try Sys.unixAddress(scratch.socketPath))
        try Sys.listen(listener, backlog: 1)
        XCTAssertNotEqual(listener, Self.inheritedNumber)

        let daemon = try SpawnedDaemon(arguments(Self.inheritedNumber, scratch.shared.path), in: scratch.directory,
                                       inherit: (fd: listener, as: Self.inheritedNumber))
        // Connecting works at once (the backlog holds us) whether or not the daemon is ready yet.
        let (frontend, fuse) = try connectAndInitialize(scratch.socketPath)
        let entry = try fuse.lookup(name: "f")
        XCTAssertEqual(entry.attr.size, UInt64(content.utf8.count), file: file, line: line)
        let handle = try fuse.open(node: entry.nodeid).fh
        let bytes = try fuse.read(node: entry.nodeid, handle: handle, offset: 0, size: 4096)
        XCTAssertEqual(String(decoding: bytes, as: UTF8.self), content, file: file, line: line)
        try fuse.release(node: entry.nodeid, handle: handle)
        frontend.close()
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(0), daemon.standardError, file: file, line: line)
    }

    func testLibvirtChrootFormWithXattrAndLocks() throws {
        try serveThroughInheritedSocket { fd, dir in
            ["--fd=\(fd)", "-o", "source=\(dir),cache=always,sandbox=chroot,xattr,flock,posix_lock", "--thread-pool-size=2"]
        }
    }

    func testLibvirtNamespaceFormWithoutXattrOrLocks() throws {
        try serveThroughInheritedSocket { fd, dir in
            ["--fd=\(fd)", "-o", "source=\(dir),cache=none,sandbox=namespace,no_xattr,no_flock,no_posix_lock"]
        }
    }

    func testLibvirtPlainSourceForm() throws {
        try serveThroughInheritedSocket { fd, dir in ["--fd=\(fd)", "-o", "source=\(dir)"] }
    }

    func testRustDaemonLongForm() throws {
        try serveThroughInheritedSocket { fd, dir in
            ["--fd=\(fd)", "--shared-dir=\(dir)", "--cache=auto", "--xattr", "--sandbox=chroot"]
        }
    }

    func testShareWithACommaEscapedAsTwoCommas() throws {
        // libvirt escapes a comma in the path as ",," inside -o.
        try serveThroughInheritedSocket(sharedName: "with,comma") { fd, dir in
            ["--fd=\(fd)", "-o", "source=\(dir.replacingOccurrences(of: ",", with: ",,")),cache=always,sandbox=chroot"]
        }
    }

    func testShareWithACommaInTheLongForm() throws {
        try serveThroughInheritedSocket(sharedName: "with,comma") { fd, dir in
            ["--fd=\(fd)", "--shared-dir=\(dir)", "--sandbox=chroot"]
        }
    }

    func testInheritedDescriptorThatIsNotASocketIsOneLineError() throws {
        let scratch = try Scratch()
        let notASocket = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(notASocket) }
        let daemon = try SpawnedDaemon(["--fd=\(Self.inheritedNumber)", "-o", "source=\(scratch.shared.path)"],
                                       in: scratch.directory, inherit: (fd: notASocket, as: Self.inheritedNumber))
        XCTAssertEqual(daemon.waitForExit(milliseconds: 5000), .exited(1))
        let errors = daemon.standardError.split(separator: "\n").filter { $0.hasPrefix("virtiofsd: ") }
        XCTAssertEqual(errors.count, 1, daemon.standardError)
        XCTAssertTrue(errors.first?.contains("--fd=\(Self.inheritedNumber)") ?? false, daemon.standardError)
    }
}
