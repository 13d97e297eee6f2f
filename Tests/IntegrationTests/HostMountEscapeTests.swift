import Foundation
import XCTest
import CVirtioFS
import VhostUserFrontend

/// The daemon must never open anything outside the shared directory, whatever the share
/// contains. Through a host mount, `MNT/escape/etc/passwd` (with `escape -> /` in the share)
/// does reach the host's /etc/passwd: the *client* follows the symlink in its own namespace,
/// as a guest would in its own root. That is not an escape. What would be one is the daemon
/// resolving a path on the host, so these tests watch the daemon's own system calls.
///
/// What the share is allowed to expose, by the administrator's choice before start:
/// - a hard link made on the host to a file outside the share is that file: it is inside
///   the share from then on, with the same inode, and the guest may read and write it;
/// - a bind mount inside the share of a directory outside it is part of the share.
final class HostMountEscapeTests: XCTestCase {
    /// Builds the hostile share: symlinks to / and /etc, a hard link and a bind mount from outside.
    private func prepareHostileShare(_ share: String, outside: String) throws {
        let fm = FileManager.default
        try fm.createDirectory(atPath: outside + "/dir", withIntermediateDirectories: true)
        XCTAssertTrue(fm.createFile(atPath: outside + "/linked-file", contents: Data("outside file\n".utf8)))
        XCTAssertTrue(fm.createFile(atPath: outside + "/dir/bound-file", contents: Data("bound\n".utf8)))
        try fm.createSymbolicLink(atPath: share + "/escape", withDestinationPath: "/")
        try fm.createSymbolicLink(atPath: share + "/etc-link", withDestinationPath: "/etc")
        try fm.createSymbolicLink(atPath: share + "/up", withDestinationPath: "../outside")
        XCTAssertEqual(link(outside + "/linked-file", share + "/hard-link"), 0)
        try fm.createDirectory(atPath: share + "/bound", withIntermediateDirectories: false)
        try fm.createDirectory(atPath: share + "/sub", withIntermediateDirectories: false)
        XCTAssertEqual(mount(outside + "/dir", share + "/bound", nil, UInt(MS_BIND), nil), 0, "bind mount: \(errno)")
    }

    /// Every path-based call of the daemon after start-up, from an strace log.
    struct TracedCall {
        let text: String
        let name: String
        let arguments: [String]
    }

    /// Parses `PID name(args...` lines (unfinished ones included; resumed halves skipped).
    static func tracedCalls(_ lines: ArraySlice<Substring>) -> [TracedCall] {
        lines.compactMap { line -> TracedCall? in
            // strace pads the pid column: "2073  openat(...".
            var rest = line.drop { $0 != " " }.drop { $0 == " " }
            if rest.hasPrefix("<...") || rest.hasPrefix("+++") || rest.hasPrefix("---") { return nil }
            guard let open = rest.firstIndex(of: "(") else { return nil }
            let name = String(rest[..<open])
            rest = rest[rest.index(after: open)...]
            // Split the arguments at top-level commas, keeping quoted strings whole.
            var arguments: [String] = [], current = "", inQuote = false, escaped = false, depth = 0
            for c in rest {
                if inQuote {
                    current.append(c)
                    if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inQuote = false }
                    continue
                }
                if c == "\"" { inQuote = true; current.append(c); continue }
                if c == "{" || c == "[" || c == "(" { depth += 1 }
                if c == "}" || c == "]" { depth -= 1 }
                if c == ")" {
                    if depth == 0 { break }
                    depth -= 1
                }
                if c == "," && depth == 0 {
                    arguments.append(current.trimmingCharacters(in: .whitespaces))
                    current = ""
                    continue
                }
                current.append(c)
            }
            arguments.append(current.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: " <unfinished ...>", with: ""))
            return TracedCall(text: String(line), name: name, arguments: arguments)
        }
    }

    /// Which (dirfd, path) argument pairs a call resolves; `nil` dirfd means "relative to the cwd".
    static func resolvedPaths(_ call: TracedCall) -> [(dirfd: String?, path: String)] {
        let a = call.arguments
        func at(_ i: Int, _ j: Int) -> (String?, String)? { a.count > j ? (a[i], a[j]) : nil }
        switch call.name {
        case "openat", "openat2", "newfstatat", "fstatat64", "statx", "readlinkat", "mkdirat", "mknodat",
             "unlinkat", "fchownat", "fchmodat", "fchmodat2", "utimensat", "faccessat", "faccessat2",
             "name_to_handle_at", "futimesat", "inotify_add_watch":
            return [at(0, 1)].compactMap { $0.map { (dirfd: $0.0, path: $0.1) } }
        case "renameat", "renameat2", "linkat":
            return [at(0, 1), at(2, 3)].compactMap { $0.map { (dirfd: $0.0, path: $0.1) } }
        case "symlinkat":
            // The first argument is the link's content, not a path the call resolves.
            return [at(1, 2)].compactMap { $0.map { (dirfd: $0.0, path: $0.1) } }
        case "execve", "execveat", "open", "creat", "stat", "lstat", "access", "readlink", "mkdir", "rmdir",
             "unlink", "chmod", "chown", "lchown", "truncate", "utime", "utimes", "statfs", "chdir", "chroot",
             "getxattr", "lgetxattr", "setxattr", "lsetxattr", "listxattr", "llistxattr", "removexattr",
             "lremovexattr", "mount", "umount2", "pivot_root", "swapon", "mknod", "acct", "uselib", "quotactl":
            return a.isEmpty ? [] : [(dirfd: nil, path: a[0])]
        case "rename", "link", "symlink":
            return a.count > 1 ? [(dirfd: nil, path: a[1])] + (call.name == "symlink" ? [] : [(dirfd: nil, path: a[0])]) : []
        default:
            return []
        }
    }

    /// Why a resolved path is not relative to a held descriptor, or nil when it is.
    static func violation(dirfd: String?, path: String, share: String) -> String? {
        let unquoted = path.hasPrefix("\"") && path.hasSuffix("\"") && path.count >= 2 ? String(path.dropFirst().dropLast()) : path
        if unquoted.hasPrefix("/proc/self/fd/") || unquoted.hasPrefix("/proc/thread-self/fd/") { return nil }
        if unquoted.hasPrefix("/") {
            return unquoted == share || unquoted.hasPrefix(share + "/") ? "absolute path inside the share" : "absolute host path"
        }
        guard let dirfd else { return "path relative to the working directory" }
        if dirfd == "AT_FDCWD" { return unquoted.isEmpty ? "AT_FDCWD with an empty path" : "AT_FDCWD-relative path" }
        return nil
    }

    func testDaemonResolvesEveryPathFromAHeldDescriptor() throws {
        guard let strace = programPath("strace") else { throw XCTSkip("strace is not installed") }
        var outsidePath = ""
        var sharePath = ""
        let traceLog = NSTemporaryDirectory() + "hostmount-strace-\(getpid()).log"
        defer { try? FileManager.default.removeItem(atPath: traceLog) }
        let daemon = try HostMountDaemon(arguments: ["--xattr", "--cache=never"],
                                         wrapper: [strace, "-f", "-qq", "-e", "trace=%file,openat2", "-o", traceLog]) { share in
            sharePath = share
            outsidePath = URL(fileURLWithPath: share).deletingLastPathComponent().appendingPathComponent("outside").path
            try self.prepareHostileShare(share, outside: outsidePath)
        }
        defer { _ = umount2(sharePath + "/bound", Int32(MNT_DETACH)) } // when a check above threw
        let m = daemon.mountpoint
        // Start-up is over once the mount answers; everything after this must be fd-relative.
        var st = stat()
        XCTAssertEqual(stat(m, &st), 0)
        usleep(300_000)
        let startupLines = try String(contentsOfFile: traceLog, encoding: .utf8).split(separator: "\n").count

        // The symlinks themselves, never followed by the daemon.
        var buffer = [CChar](repeating: 0, count: 256)
        XCTAssertEqual(readlink(m + "/escape", &buffer, 255), 1)
        XCTAssertEqual(String(cString: buffer), "/")
        buffer = [CChar](repeating: 0, count: 256)
        XCTAssertEqual(readlink(m + "/etc-link", &buffer, 255), 4)
        XCTAssertEqual(lstat(m + "/escape", &st), 0)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFLNK)
        XCTAssertEqual(open(m + "/escape", O_RDONLY | O_NOFOLLOW), -1)
        XCTAssertEqual(errno, ELOOP)
        XCTAssertEqual(open(m + "/etc-link/passwd", O_RDONLY | O_NOFOLLOW) >= 0 ? 0 : errno, 0,
                       "O_NOFOLLOW applies to the last component only; the client follows etc-link itself")
        let pathFD = open(m + "/etc-link", CVFS_O_PATH | O_NOFOLLOW)
        XCTAssertGreaterThanOrEqual(pathFD, 0)
        close(pathFD)
        // The client follows escape -> / in its own namespace: this is the host's passwd,
        // reached by the kernel's path walk, not by the daemon.
        var viaLink = stat(), direct = stat()
        XCTAssertEqual(stat(m + "/escape/etc/passwd", &viaLink), 0)
        XCTAssertEqual(stat("/etc/passwd", &direct), 0)
        XCTAssertEqual(viaLink.st_ino, direct.st_ino)
        XCTAssertEqual(viaLink.st_dev, direct.st_dev, "not served by the FUSE mount")
        // ".." of the mount root is the kernel's business: the host's parent directory.
        var parent = stat(), expected = stat()
        XCTAssertEqual(stat(m + "/..", &parent), 0)
        XCTAssertEqual(stat(daemon.root.path, &expected), 0)
        XCTAssertEqual(parent.st_ino, expected.st_ino)
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: m + "/..")),
                       Set(try FileManager.default.contentsOfDirectory(atPath: daemon.root.path)))
        XCTAssertEqual(stat(m + "/sub/../sub", &st), 0)
        // A relative symlink pointing out of the share: followed by the client, outside the mount.
        XCTAssertEqual(try String(contentsOfFile: m + "/up/linked-file", encoding: .utf8), "outside file\n")
        // Allowed by construction: the hard link and the bind mount are part of the share.
        XCTAssertEqual(try String(contentsOfFile: m + "/hard-link", encoding: .utf8), "outside file\n")
        XCTAssertEqual(try String(contentsOfFile: m + "/bound/bound-file", encoding: .utf8), "bound\n")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: m + "/bound"), ["bound-file"])
        // Some ordinary work too, so the daemon has reasons to resolve names and reopen files.
        XCTAssertTrue(FileManager.default.createFile(atPath: m + "/sub/new", contents: Data("n".utf8)))
        XCTAssertEqual(rename(m + "/sub/new", m + "/sub/renamed"), 0)
        XCTAssertEqual(link(m + "/sub/renamed", m + "/sub/linked"), 0)
        XCTAssertEqual(symlink("/etc/shadow", m + "/sub/evil"), 0)
        XCTAssertEqual(chmod(m + "/sub/renamed", 0o600), 0)
        XCTAssertEqual(unlink(m + "/sub/linked"), 0)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: m + "/sub").sorted(), ["evil", "renamed"])

        usleep(300_000) // let strace write out the last calls
        let lines = try String(contentsOfFile: traceLog, encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(daemon.stop(), 0, daemon.log())
        // Before the share is removed, so the removal cannot reach through the bind mount.
        XCTAssertEqual(umount2(sharePath + "/bound", 0), 0)

        let calls = Self.tracedCalls(lines[min(startupLines, lines.count)...])
        var checked = 0
        for call in calls {
            for (dirfd, path) in Self.resolvedPaths(call) {
                checked += 1
                if let problem = Self.violation(dirfd: dirfd, path: path, share: sharePath) {
                    XCTFail("\(problem): \(call.text)")
                }
            }
        }
        XCTAssertGreaterThan(checked, 10, "the daemon made path-based calls after start-up:\n\(lines.suffix(20).joined(separator: "\n"))")
        // No host path outside the share anywhere in what the daemon asked the kernel for.
        for call in calls where call.name != "readlinkat" && call.name != "symlinkat" && call.name != "readlink" {
            XCTAssertFalse(call.text.contains("\"/etc") || call.text.contains("\"" + outsidePath),
                           "host path outside the share: \(call.text)")
        }
    }

    /// The checker itself: calls relative to the cwd or by absolute path are caught.
    func testTraceCheckerFlagsAbsoluteAndCwdRelativePaths() {
        let lines: [Substring] = [
            "101 openat(AT_FDCWD, \"/etc/passwd\", O_RDONLY|O_CLOEXEC) = 5",
            "101    openat(7, \"name\", O_RDONLY|O_NOFOLLOW|O_PATH) = 8",
            "102 newfstatat(AT_FDCWD, \"relative\", {st_mode=S_IFREG|0644, st_size=1, ...}, 0) = 0",
            "102 openat(AT_FDCWD, \"/proc/self/fd/9\", O_RDWR) = 10",
            "103 renameat2(4, \"a\", AT_FDCWD, \"b\", RENAME_NOREPLACE <unfinished ...>",
            "103 <... renameat2 resumed>) = 0",
            "104 lgetxattr(\"/proc/self/fd/4\", \"user.x\", 0x7f, 64) = 1",
            "104 getxattr(\"/home/x\", \"user.x\", 0x7f, 64) = -1 ENODATA (No data available)",
            "105 symlinkat(\"/etc/shadow\", 6, \"evil\") = 0",
        ]
        let calls = Self.tracedCalls(lines[...])
        XCTAssertEqual(calls.count, 8)
        let problems = calls.map { call in
            Self.resolvedPaths(call).compactMap { Self.violation(dirfd: $0.dirfd, path: $0.path, share: "/srv/share") }
        }
        XCTAssertEqual(problems, [["absolute host path"], [], ["AT_FDCWD-relative path"], [], ["AT_FDCWD-relative path"],
                                  [], ["absolute host path"], []])
    }

    /// LOOKUP of "..", "/" and names with a slash, sent straight to the vhost-user daemon:
    /// nothing the kernel would filter out, and nothing may leave the share.
    func testRawLookupsOfDotDotAndSlashStayInsideTheShare() throws {
        let rig = try Rig(files: ["f": "inside"])
        try FileManager.default.createDirectory(at: rig.shared.appendingPathComponent("sub"), withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: rig.shared.appendingPathComponent("escape").path, withDestinationPath: "/")
        let fuse = try rig.fuseClient()
        try fuse.initialize()
        var shareStat = stat(), parentStat = stat()
        XCTAssertEqual(stat(rig.shared.path, &shareStat), 0)
        XCTAssertEqual(stat(rig.directory.path, &parentStat), 0)
        let root = UInt64(FUSE_ROOT_ID)

        // ".." of the root is the root itself, never the host directory above it.
        if let entry = try? fuse.lookup(parent: root, name: "..") {
            XCTAssertEqual(entry.attr.ino, UInt64(shareStat.st_ino), "\"..\" of the root must be the root")
            XCTAssertNotEqual(entry.attr.ino, UInt64(parentStat.st_ino))
        }
        // ".." of a subdirectory is the root.
        let sub = try fuse.lookup(parent: root, name: "sub")
        if let up = try? fuse.lookup(parent: sub.nodeid, name: "..") {
            XCTAssertEqual(up.attr.ino, UInt64(shareStat.st_ino))
            if let upUp = try? fuse.lookup(parent: up.nodeid, name: "..") {
                XCTAssertEqual(upUp.attr.ino, UInt64(shareStat.st_ino), "\"..\" twice stays at the root")
            }
        }
        // Names the kernel never sends: each must be refused, not resolved as a path.
        for name in ["/", "/etc", "sub/..", "../shared", "escape/etc", "f/"] {
            let reply = try fuse.call(.lookup(parent: root, name: name))
            XCTAssertNotEqual(reply.error, 0, "LOOKUP \"\(name)\" must fail")
        }
        // Making or removing names with a slash or "..": refused, and nothing appears or
        // disappears next to the share.
        let neighbour = rig.directory.appendingPathComponent("neighbour").path
        XCTAssertTrue(FileManager.default.createFile(atPath: neighbour, contents: Data("keep".utf8)))
        for name in ["../evil", "..", "/evil", "sub/../../evil"] {
            let created = try fuse.call(.create(parent: root, name: name, flags: O_RDWR, mode: 0o644))
            XCTAssertNotEqual(created.error, 0, "CREATE \"\(name)\" must fail")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: rig.directory.appendingPathComponent("evil").path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "/evil"))
        for name in ["../neighbour", "..", "sub/../../neighbour"] {
            let removed = try fuse.call(.unlink(parent: root, name: name))
            XCTAssertNotEqual(removed.error, 0, "UNLINK \"\(name)\" must fail")
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: neighbour), "a file beside the share survives")
        // The symlink to / is a symlink to the daemon, not a directory to descend into.
        let escape = try fuse.lookup(parent: root, name: "escape")
        XCTAssertEqual(escape.attr.mode & 0o170000, 0o120000, "a symlink")
        let through = try fuse.call(.lookup(parent: escape.nodeid, name: "etc"))
        XCTAssertNotEqual(through.error, 0, "LOOKUP under a symlink node must not follow it")
        XCTAssertTrue(rig.daemon.isRunning, rig.daemon.logTail())
    }
}
