#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE

/// Seed inputs for the FUSE harnesses: request sequences the way the kernel
/// lays them out (structs from linux/fuse.h), one per family of operations, on
/// the scratch tree the passthrough harness builds (node 1 is the root; the
/// first LOOKUP of an input gets node 2, the first OPEN handle 1).
public enum FUSESeeds {
    struct Builder {
        var bytes: [UInt8] = []
        var unique: UInt64 = 100

        mutating func add(_ opcode: Opcode, node: UInt64, _ parts: [UInt8]...) {
            let body = parts.flatMap { $0 }
            var h = fuse_in_header()
            h.len = UInt32(MemoryLayout<fuse_in_header>.size + body.count)
            h.opcode = opcode.rawValue
            h.unique = unique
            h.nodeid = node
            h.uid = 0
            h.gid = 0
            h.pid = 77
            unique += 2
            bytes += raw(h) + body
        }
    }

    static func raw<T>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }
    static func name(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

    static func open(_ flags: Int32) -> [UInt8] { var a = fuse_open_in(); a.flags = UInt32(bitPattern: flags); return raw(a) }
    static func read(fh: UInt64, offset: UInt64, size: UInt32) -> [UInt8] {
        var a = fuse_read_in(); a.fh = fh; a.offset = offset; a.size = size; return raw(a)
    }
    static func release(fh: UInt64) -> [UInt8] { var a = fuse_release_in(); a.fh = fh; return raw(a) }

    /// Name → input bytes (without the driver's control byte; see `withControl`).
    public static var all: [(String, [UInt8])] {
        var seeds: [(String, [UInt8])] = []
        func seed(_ name: String, _ build: (inout Builder) -> Void) {
            var b = Builder()
            build(&b)
            seeds.append((name, b.bytes))
        }
        seed("lookup-getattr") { b in
            b.add(.lookup, node: 1, name("file"))
            b.add(.getattr, node: 2, raw(fuse_getattr_in()))
            b.add(.lookup, node: 1, name("link"))
            b.add(.readlink, node: 3)
            b.add(.forget, node: 2, raw(fuse_forget_in(nlookup: 1)))
        }
        seed("open-read-write") { b in
            b.add(.lookup, node: 1, name("file"))
            b.add(.open, node: 2, open(O_RDWR))
            b.add(.read, node: 2, read(fh: 1, offset: 0, size: 4096))
            var w = fuse_write_in(); w.fh = 1; w.offset = 4090; w.size = 12
            b.add(.write, node: 2, raw(w), Array("hello, world".utf8))
            var s = fuse_fsync_in(); s.fh = 1
            b.add(.fsync, node: 2, raw(s))
            var l = fuse_lseek_in(); l.fh = 1; l.offset = 0; l.whence = 3 // SEEK_DATA
            b.add(.lseek, node: 2, raw(l))
            var f = fuse_fallocate_in(); f.fh = 1; f.offset = 0; f.length = 65536
            b.add(.fallocate, node: 2, raw(f))
            var fl = fuse_flush_in(); fl.fh = 1
            b.add(.flush, node: 2, raw(fl))
            b.add(.release, node: 2, release(fh: 1))
        }
        seed("create-rename-unlink") { b in
            var c = fuse_create_in(); c.flags = UInt32(O_RDWR | O_CREAT); c.mode = S_IFREG | 0o644
            b.add(.create, node: 1, raw(c), name("new"))
            var r = fuse_rename_in(); r.newdir = 1
            b.add(.rename, node: 1, raw(r), name("new"), name("renamed"))
            var r2 = fuse_rename2_in(); r2.newdir = 1; r2.flags = 2 // RENAME_EXCHANGE
            b.add(.rename2, node: 1, raw(r2), name("renamed"), name("file"))
            var ln = fuse_link_in(); ln.oldnodeid = 2
            b.add(.link, node: 1, raw(ln), name("second"))
            b.add(.unlink, node: 1, name("second"))
            b.add(.release, node: 2, release(fh: 1))
        }
        seed("mkdir-mknod-symlink") { b in
            var m = fuse_mkdir_in(); m.mode = 0o755
            b.add(.mkdir, node: 1, raw(m), name("sub"))
            var n = fuse_mknod_in(); n.mode = S_IFIFO | 0o644
            b.add(.mknod, node: 2, raw(n), name("pipe"))
            b.add(.symlink, node: 2, name("lnk"), name("../file"))
            b.add(.unlink, node: 2, name("pipe"))
            b.add(.rmdir, node: 1, name("sub"))
            var t = fuse_create_in(); t.flags = UInt32(O_RDWR); t.mode = S_IFREG | 0o600
            b.add(.tmpfile, node: 1, raw(t), name("tmp"))
        }
        seed("readdir") { b in
            b.add(.opendir, node: 1, open(O_RDONLY | O_DIRECTORY))
            b.add(.readdir, node: 1, read(fh: 1, offset: 0, size: 4096))
            b.add(.readdirplus, node: 1, read(fh: 1, offset: 0, size: 4096))
            b.add(.readdirplus, node: 1, read(fh: 1, offset: 3, size: 200))
            var s = fuse_fsync_in(); s.fh = 1
            b.add(.fsyncdir, node: 1, raw(s))
            b.add(.releasedir, node: 1, release(fh: 1))
        }
        seed("xattr") { b in
            b.add(.lookup, node: 1, name("file"))
            var s = fuse_setxattr_in(); s.size = 3
            b.add(.setxattr, node: 2, raw(s), name("user.a"), Array("abc".utf8))
            var g = fuse_getxattr_in(); g.size = 64
            b.add(.getxattr, node: 2, raw(g), name("user.a"))
            b.add(.getxattr, node: 2, raw(fuse_getxattr_in()), name("user.k"))
            b.add(.listxattr, node: 2, raw(g))
            b.add(.removexattr, node: 2, name("user.a"))
            var acl = fuse_setxattr_in(); acl.size = 4
            b.add(.setxattr, node: 2, raw(acl), name("system.posix_acl_access"), [2, 0, 0, 0])
        }
        seed("setattr-access-statfs") { b in
            b.add(.lookup, node: 1, name("file"))
            var a = fuse_setattr_in(); a.valid = 1 | 8 | 16 | 32; a.mode = 0o600; a.size = 100; a.atime = 1; a.mtime = 2
            b.add(.setattr, node: 2, raw(a))
            var ac = fuse_access_in(); ac.mask = 4
            b.add(.access, node: 2, raw(ac))
            b.add(.statfs, node: 1)
            b.add(.syncfs, node: 1, raw(fuse_syncfs_in()))
        }
        seed("locks") { b in
            b.add(.lookup, node: 1, name("file"))
            b.add(.open, node: 2, open(O_RDWR))
            b.add(.open, node: 2, open(O_RDWR))
            var lk = fuse_lk_in(); lk.fh = 1; lk.owner = 5; lk.lk.start = 0; lk.lk.end = 100; lk.lk.type = UInt32(F_WRLCK)
            b.add(.setlk, node: 2, raw(lk))
            var other = lk; other.fh = 2; other.owner = 6
            b.add(.getlk, node: 2, raw(other))
            b.add(.setlkw, node: 2, raw(other))
            var fl = lk; fl.lk_flags = 1 // FUSE_LK_FLOCK
            b.add(.setlk, node: 2, raw(fl))
            b.add(.release, node: 2, release(fh: 1))
            b.add(.release, node: 2, release(fh: 2))
        }
        seed("copy-range-fifo") { b in
            b.add(.lookup, node: 1, name("file"))
            b.add(.open, node: 2, open(O_RDWR))
            var c = fuse_copy_file_range_in(); c.fh_in = 1; c.fh_out = 1; c.off_out = 9000; c.len = 100; c.nodeid_out = 2
            b.add(.copyFileRange, node: 2, raw(c))
            b.add(.lookup, node: 1, name("fifo"))
            b.add(.open, node: 3, open(O_RDONLY))
            b.add(.lookup, node: 1, name("escape"))
            b.add(.open, node: 4, open(O_RDONLY))
        }
        seed("forget-interrupt-destroy") { b in
            b.add(.lookup, node: 1, name("dir"))
            b.add(.lookup, node: 2, name("inner"))
            var bf = fuse_batch_forget_in(); bf.count = 2
            b.add(.batchForget, node: 0, raw(bf), raw(fuse_forget_one(nodeid: 2, nlookup: 1)), raw(fuse_forget_one(nodeid: 3, nlookup: 1)))
            var i = fuse_interrupt_in(); i.unique = 100
            b.add(.interrupt, node: 0, raw(i))
            b.add(.getattr, node: 2, raw(fuse_getattr_in()))
            b.add(.destroy, node: 0)
            b.add(.getattr, node: 1, raw(fuse_getattr_in()))
        }
        return seeds
    }

    /// The seeds, each behind every given prefix (the control byte, then for the
    /// passthrough harness its option byte), plus a session the input starts
    /// itself and one with a tiny reply buffer.
    public static func withPrefixes(_ prefixes: [[UInt8]]) -> [(String, [UInt8])] {
        var out: [(String, [UInt8])] = []
        for (name, bytes) in all {
            for (i, prefix) in prefixes.enumerated() {
                out.append(("\(name)-\(i)", prefix + bytes))
            }
        }
        if let first = all.first, let prefix = prefixes.first {
            out.append(("own-init", [prefix[0] | 0x10] + prefix.dropFirst() + FUSEDriver.initRequest() + first.1))
            out.append(("small-reply", [prefix[0] & ~7 | 2] + prefix.dropFirst() + first.1))
        }
        return out
    }
}

extension FUSESeeds {
    /// libFuzzer dictionary entries: every opcode, every request struct's size
    /// and a header length for it, as little-endian u32, and names the scratch
    /// tree and the xattr code know.
    public static var dictionary: [String] {
        var entries: [String] = []
        for code in UInt32(0)...60 where Opcode(rawValue: code) != nil {
            entries.append(dictionaryEntry("opcode_\(code)", le(code)))
        }
        let sizes: [(String, Int)] = [
            ("in_header", MemoryLayout<fuse_in_header>.size), ("init_in", MemoryLayout<fuse_init_in>.size),
            ("open_in", MemoryLayout<fuse_open_in>.size), ("read_in", MemoryLayout<fuse_read_in>.size),
            ("write_in", MemoryLayout<fuse_write_in>.size), ("create_in", MemoryLayout<fuse_create_in>.size),
            ("mkdir_in", MemoryLayout<fuse_mkdir_in>.size), ("mknod_in", MemoryLayout<fuse_mknod_in>.size),
            ("rename2_in", MemoryLayout<fuse_rename2_in>.size), ("setattr_in", MemoryLayout<fuse_setattr_in>.size),
            ("setxattr_in", MemoryLayout<fuse_setxattr_in>.size), ("getxattr_in", MemoryLayout<fuse_getxattr_in>.size),
            ("lk_in", MemoryLayout<fuse_lk_in>.size), ("fallocate_in", MemoryLayout<fuse_fallocate_in>.size),
            ("lseek_in", MemoryLayout<fuse_lseek_in>.size), ("copy_file_range_in", MemoryLayout<fuse_copy_file_range_in>.size),
            ("batch_forget_in", MemoryLayout<fuse_batch_forget_in>.size), ("forget_one", MemoryLayout<fuse_forget_one>.size),
            ("secctx_header", MemoryLayout<fuse_secctx_header>.size), ("ext_header", MemoryLayout<fuse_ext_header>.size),
        ]
        for (name, size) in sizes {
            entries.append(dictionaryEntry("size_\(name)", le(UInt32(size))))
            entries.append(dictionaryEntry("len_\(name)", le(UInt32(MemoryLayout<fuse_in_header>.size + size))))
        }
        for name in ["file", "dir", "inner", "link", "escape", "fifo", "hardlink", "..", ".", "user.", "user.k",
                     "security.", "security.capability", "security.selinux", "trusted.", "user.virtiofs.",
                     "system.posix_acl_access", "system.posix_acl_default"] {
            entries.append(dictionaryEntry("name_" + name.map { $0.isLetter ? String($0) : "_" }.joined(),
                                           Array(name.utf8) + [0]))
        }
        return entries
    }

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
}

/// One line of a libFuzzer dictionary: `name="\xNN..."`.
public func dictionaryEntry(_ name: String, _ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef")
    let value = bytes.map { b -> String in
        if b >= 0x20 && b < 0x7f && b != 0x22 && b != 0x5c { return String(UnicodeScalar(b)) }
        return "\\x" + String(digits[Int(b >> 4)]) + String(digits[Int(b & 15)])
    }.joined()
    return "\(name)=\"\(value)\""
}
