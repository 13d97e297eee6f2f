import XCTest
import Foundation
import CVirtioFS
import Posix
import FUSE
import HostFUSE

/// A read-only tree held in memory: /hello.txt and /sub/ (with /sub/inner.txt).
struct TinyFS: FileSystem {
    struct Node {
        var id: NodeID
        var parent: NodeID
        var name: String
        var mode: UInt32
        var contents: [UInt8]
    }
    let nodes: [NodeID: Node] = [
        1: Node(id: 1, parent: 1, name: "", mode: S_IFDIR | 0o755, contents: []),
        2: Node(id: 2, parent: 1, name: "hello.txt", mode: S_IFREG | 0o644, contents: Array("Hello from FUSE\n".utf8)),
        3: Node(id: 3, parent: 1, name: "sub", mode: S_IFDIR | 0o755, contents: []),
        4: Node(id: 4, parent: 3, name: "inner.txt", mode: S_IFREG | 0o600, contents: Array(repeating: 0x5A, count: 300_000)),
    ]

    func stat(of node: Node) -> stat {
        var st = Glibc.stat()
        st.st_ino = UInt(node.id)
        st.st_mode = node.mode
        st.st_nlink = node.mode & S_IFMT == S_IFDIR ? 2 : 1
        st.st_size = node.contents.count
        st.st_blocks = (node.contents.count + 511) / 512
        st.st_blksize = 4096
        st.st_mtim = timespec(tv_sec: 1_600_000_000, tv_nsec: 5)
        return st
    }

    func node(_ id: NodeID) throws(Errno) -> Node {
        guard let n = nodes[id] else { throw .noEntry }
        return n
    }

    func entry(_ n: Node) -> Entry {
        Entry(nodeID: n.id, attributes: stat(of: n), attributesTimeout: Timeout(seconds: 1), entryTimeout: Timeout(seconds: 1))
    }

    func children(of parent: NodeID) -> [Node] {
        nodes.values.filter { $0.parent == parent && $0.id != 1 }.sorted { $0.id < $1.id }
    }

    func lookup(_ ctx: RequestContext, parent: NodeID, name: FileName) throws(Errno) -> Entry {
        let wanted = name.debugDescription
        guard let child = children(of: parent).first(where: { $0.name == wanted }) else { throw .noEntry }
        return entry(child)
    }
    func getattr(_ ctx: RequestContext, node: NodeID, handle: HandleID?) throws(Errno) -> AttributesReply {
        AttributesReply(attributes: stat(of: try self.node(node)), timeout: Timeout(seconds: 1))
    }
    func open(_ ctx: RequestContext, node: NodeID, flags: UInt32, killSuidGid: Bool) throws(Errno) -> OpenReply {
        guard Int32(bitPattern: flags) & O_ACCMODE == O_RDONLY else { throw .readOnlyFileSystem }
        return OpenReply(handle: node)
    }
    func read<W: FuseWriter>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, size: UInt32, into writer: inout W) throws(Errno) -> Int {
        let data = try self.node(node).contents
        guard offset < UInt64(data.count) else { return 0 }
        let start = Int(offset)
        let n = min(Int(size), data.count - start)
        return try writer.withIOVecs(count: n) { (iov) throws(Errno) -> Int in
            data.withUnsafeBytes { bytes in
                guard let target = iov[0].iov_base, let source = bytes.baseAddress else { return 0 }
                target.copyMemory(from: source + start, byteCount: n)
                return n
            }
        } ?? 0
    }
    func opendir(_ ctx: RequestContext, node: NodeID, flags: UInt32) throws(Errno) -> OpenReply {
        OpenReply(handle: node)
    }
    func readdir<S: DirectorySink>(_ ctx: RequestContext, node: NodeID, handle: HandleID, offset: UInt64, plus: Bool, into sink: inout S) throws(Errno) {
        let listing = [(".", node, UInt32(DT_DIR)), ("..", try self.node(node).parent, UInt32(DT_DIR))]
            + children(of: node).map { ($0.name, $0.id, $0.mode & S_IFMT == S_IFDIR ? UInt32(DT_DIR) : UInt32(DT_REG)) }
        var index = offset < UInt64(listing.count) ? Int(offset) : listing.count
        while index < listing.count {
            let (name, inode, type) = listing[index]
            var bytes = Array(name.utf8CString)
            let fitted = bytes.withUnsafeMutableBufferPointer { p -> Bool in
                guard let base = p.baseAddress, sink.fits(nameLength: p.count - 1) else { return false }
                return sink.add(DirectoryEntry(inode: inode, nextOffset: UInt64(index + 1), type: type,
                                               name: FileName(cString: base, count: p.count - 1)), plus: nil)
            }
            guard fitted else { break }
            index += 1
        }
    }
    func statfs(_ ctx: RequestContext, node: NodeID) throws(Errno) -> statvfs {
        var s = statvfs()
        s.f_bsize = 4096
        s.f_frsize = 4096
        s.f_blocks = 1000
        s.f_bfree = 500
        s.f_bavail = 400
        s.f_files = 10
        s.f_ffree = 6
        s.f_namemax = 255
        return s
    }
}

final class HostFUSETests: XCTestCase {
    func testStatReaddirAndReadThroughTheKernel() throws {
        try XCTSkipUnless(geteuid() == 0, "mounting needs root")
        try XCTSkipUnless(access("/dev/fuse", R_OK | W_OK) == 0, "no /dev/fuse")

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hostfuse-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { rmdir(dir) }

        let server = Server(filesystem: TinyFS(), options: ServerOptions(maxWrite: 128 * 1024), logger: .discarding)
        var session: HostFUSESession<TinyFS>? = try HostFUSESession(mountpoint: dir, server: server, threads: 2, logger: .discarding)
        let shutdown = try Sys.eventfd()
        defer { Sys.close(shutdown) }
        let finished = DispatchSemaphore(value: 0)
        let running = session
        Thread.detachNewThread {
            running?.run(shutdownFD: shutdown)
            finished.signal()
        }

        // stat
        var st = stat()
        XCTAssertEqual(stat(dir + "/hello.txt", &st), 0)
        XCTAssertEqual(st.st_size, 16)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFREG)
        XCTAssertEqual(st.st_ino, 2)
        XCTAssertEqual(st.st_mtim.tv_sec, 1_600_000_000)
        XCTAssertEqual(stat(dir + "/sub", &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFDIR)
        XCTAssertEqual(stat(dir + "/missing", &st), -1)
        XCTAssertEqual(errno, ENOENT)

        // readdir
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["hello.txt", "sub"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/sub"), ["inner.txt"])

        // read, small and larger than one max_write
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/hello.txt"), Data("Hello from FUSE\n".utf8))
        let inner = FileManager.default.contents(atPath: dir + "/sub/inner.txt")
        XCTAssertEqual(inner?.count, 300_000)
        XCTAssertEqual(inner.map { $0.allSatisfy { $0 == 0x5A } }, true)

        // statfs
        var fsStat = statvfs()
        XCTAssertEqual(statvfs(dir, &fsStat), 0)
        XCTAssertEqual(fsStat.f_blocks, 1000)
        XCTAssertEqual(fsStat.f_namemax, 255)

        // The filesystem's errors reach the caller.
        XCTAssertEqual(open(dir + "/hello.txt", O_WRONLY), -1)
        XCTAssertEqual(errno, EROFS)

        // The mount shows our fs name.
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        XCTAssertTrue(mounts.contains("virtiofsd \(dir) fuse"), mounts)

        try Sys.eventfdSignal(shutdown)
        XCTAssertEqual(finished.wait(timeout: .now() + 20), .success, "run() did not return after shutdown")
        session = nil
        let after = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        XCTAssertFalse(after.contains(" \(dir) "), "still mounted")
    }

    func testRunReturnsWhenTheMountIsRemovedFromOutside() throws {
        try XCTSkipUnless(geteuid() == 0, "mounting needs root")
        try XCTSkipUnless(access("/dev/fuse", R_OK | W_OK) == 0, "no /dev/fuse")

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hostfuse-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { rmdir(dir) }
        let server = Server(filesystem: TinyFS(), options: ServerOptions(), logger: .discarding)
        let session = try HostFUSESession(mountpoint: dir, server: server, threads: 1, logger: .discarding)
        let shutdown = try Sys.eventfd()
        defer { Sys.close(shutdown) }
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            session.run(shutdownFD: shutdown)
            finished.signal()
        }
        var st = stat()
        XCTAssertEqual(stat(dir + "/hello.txt", &st), 0)
        XCTAssertEqual(umount2(dir, 0), 0, String(cString: strerror(errno)))
        XCTAssertEqual(finished.wait(timeout: .now() + 20), .success, "run() did not notice the unmount")
    }
}
