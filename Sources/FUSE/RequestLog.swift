#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix
import Synchronization

// What the dispatcher says about requests: one debug line per request that names what it
// was about (names, node, handle, offset, size), who asked, on which queue, how it ended
// (the resulting node or handle, or the errno by name) and how long it took; and warnings
// when a guest runs into a descriptor or memory limit. Built only when debug is on: the
// normal path pays one check of the log level.

extension Server {
    /// `handle` with a debug line. The request is decoded twice (here, from a copy of
    /// the reader, and by the dispatcher); the reply's first bytes are kept as they are
    /// written so the line can name the node or handle it returned.
    func handleDescribed<R: FuseReader, W: FuseWriter>(_ reader: inout R, _ writer: inout W, queue: Int) -> Int {
        // A reader that is a class would be consumed by the description: only describe values.
        var copy = reader
        let request = R.self is AnyObject.Type ? "request" : describeRequest(&copy)
        var recording = RecordingWriter(base: writer)
        let began = Sys.monotonicNanoseconds()
        let (length, opcode, result) = handleCounted(&reader, &recording)
        let micros = (Sys.monotonicNanoseconds() &- began) / 1000
        writer = recording.base
        let outcome: String
        if let result {
            outcome = errnoName(result)
        } else if length == 0 {
            outcome = "no reply"
        } else {
            outcome = describeReply(Opcode(rawValue: opcode), recording.head, length: length)
        }
        logger.debug("\(request) queue=\(queue) -> \(outcome) (\(micros) us)")
        return length
    }

    /// A warning, at most every 10 s, when a guest request fails for want of descriptors
    /// or memory: the operator can raise --rlimit-nofile or the memory limit.
    func warnIfResourceLimit(_ opcode: UInt32, _ error: Errno) {
        let what: String
        switch error.rawValue {
        case EMFILE: what = "the daemon's open-file limit (raise --rlimit-nofile, or see docs/troubleshooting.md)"
        case ENFILE: what = "the system's open-file limit (fs.file-max)"
        case ENOMEM: what = "a memory limit"
        default: return
        }
        guard statistics.claimWarning(now: Sys.monotonicNanoseconds()) else { return }
        let name = Opcode(rawValue: opcode)?.name ?? "opcode \(opcode)"
        logger.warning("guest request \(name) failed with \(errnoName(error)): the daemon hit \(what)")
    }

    /// "LOOKUP unique=6 uid=1000 pid=321 node=1 name=\"foo\"": the header and the arguments.
    func describeRequest<R: FuseReader>(_ r: inout R) -> String {
        guard let h = r.readWire(fuse_in_header.self) else { return "short request" }
        let opcode = Opcode(rawValue: h.opcode)
        var line = "\(opcode?.name ?? "opcode \(h.opcode)") unique=\(h.unique) uid=\(h.uid) pid=\(h.pid) node=\(h.nodeid)"
        func names(_ count: Int) {
            for (i, name) in readNames(&r, count).enumerated() {
                line += (i == 0 ? " name=" : " newname=") + quoted(name)
            }
        }
        switch opcode {
        case .lookup, .unlink, .rmdir, .removexattr: names(1)
        case .symlink: names(2)
        case .mknod: if r.skip(MemoryLayout<fuse_mknod_in>.size) { names(1) }
        case .mkdir: if r.skip(MemoryLayout<fuse_mkdir_in>.size) { names(1) }
        case .create: if r.skip(MemoryLayout<fuse_create_in>.size) { names(1) }
        case .getxattr: if r.skip(MemoryLayout<fuse_getxattr_in>.size) { names(1) }
        case .rename:
            if let a = r.readWire(fuse_rename_in.self) { line += " newdir=\(a.newdir)"; names(2) }
        case .rename2:
            if let a = r.readWire(fuse_rename2_in.self) { line += " newdir=\(a.newdir) flags=0x\(String(a.flags, radix: 16))"; names(2) }
        case .link:
            if let a = r.readWire(fuse_link_in.self) { line += " target=\(a.oldnodeid)"; names(1) }
        case .open, .opendir:
            if let a = r.readWire(fuse_open_in.self) { line += " flags=0x\(String(a.flags, radix: 16))" }
        case .read, .readdir, .readdirplus:
            if let a = r.readWire(fuse_read_in.self) { line += " fh=\(a.fh) offset=\(a.offset) size=\(a.size)" }
        case .write:
            if let a = r.readWire(fuse_write_in.self) { line += " fh=\(a.fh) offset=\(a.offset) size=\(a.size)" }
        case .release, .releasedir:
            if let a = r.readWire(fuse_release_in.self) { line += " fh=\(a.fh)" }
        case .flush:
            if let a = r.readWire(fuse_flush_in.self) { line += " fh=\(a.fh)" }
        case .fsync, .fsyncdir:
            if let a = r.readWire(fuse_fsync_in.self) { line += " fh=\(a.fh)" }
        case .setattr:
            if let a = r.readWire(fuse_setattr_in.self) { line += " valid=0x\(String(a.valid, radix: 16)) size=\(a.size)" }
        case .fallocate:
            if let a = r.readWire(fuse_fallocate_in.self) { line += " fh=\(a.fh) offset=\(a.offset) length=\(a.length)" }
        case .lseek:
            if let a = r.readWire(fuse_lseek_in.self) { line += " fh=\(a.fh) offset=\(a.offset) whence=\(a.whence)" }
        case .getlk, .setlk, .setlkw:
            if let a = r.readWire(fuse_lk_in.self) { line += " fh=\(a.fh) type=\(a.lk.type) start=\(a.lk.start) end=\(a.lk.end)" }
        case .forget:
            if let a = r.readWire(fuse_forget_in.self) { line += " nlookup=\(a.nlookup)" }
        case .batchForget:
            if let a = r.readWire(fuse_batch_forget_in.self) { line += " count=\(a.count)" }
        default:
            break
        }
        return line
    }

    /// "node=42", "fh=3", "4096 bytes": what a successful reply gave the guest.
    func describeReply(_ opcode: Opcode?, _ head: [UInt8], length: Int) -> String {
        let body = head.dropFirst(FuseWire.outHeaderSize)
        func u64(_ offset: Int) -> UInt64? {
            guard body.count >= offset + 8 else { return nil }
            var v: UInt64 = 0
            for i in 0..<8 { v |= UInt64(body[body.startIndex + offset + i]) << (8 * UInt64(i)) }
            return v
        }
        let payload = length - FuseWire.outHeaderSize
        switch opcode {
        case .lookup, .mkdir, .mknod, .symlink, .link:
            return u64(0).map { "node=\($0)" } ?? "\(payload) bytes"
        case .create:
            let fh = u64(MemoryLayout<fuse_entry_out>.size)
            return (u64(0).map { "node=\($0)" } ?? "?") + (fh.map { " fh=\($0)" } ?? "")
        case .open, .opendir:
            return u64(0).map { "fh=\($0)" } ?? "\(payload) bytes"
        case .write:
            guard body.count >= 4 else { return "ok" }
            let i = body.startIndex
            let size = UInt32(body[i]) | UInt32(body[i + 1]) << 8 | UInt32(body[i + 2]) << 16 | UInt32(body[i + 3]) << 24
            return "wrote \(size)"
        case .read, .readdir, .readdirplus, .readlink, .getxattr, .listxattr:
            return "\(payload) bytes"
        default:
            return payload == 0 ? "ok" : "ok, \(payload) bytes"
        }
    }

    /// Up to `count` NUL-terminated names (at most 255 bytes each shown).
    private func readNames<R: FuseReader>(_ r: inout R, _ count: Int) -> [[UInt8]] {
        let available = min(r.remaining, 2 * (FuseWire.maxSymlinkTarget + 1))
        guard available > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: available)
        guard bytes.withUnsafeMutableBytes({ r.read(into: $0) }) else { return [] }
        return Array(bytes.split(separator: 0, maxSplits: count, omittingEmptySubsequences: false)
            .prefix(count).map { Array($0.prefix(FuseWire.maxNameLength)) })
    }
}

/// A name for a log line: quoted, with bytes that are not printable ASCII as \xNN.
func quoted(_ name: [UInt8]) -> String {
    var s = "\""
    for b in name {
        if b >= 0x20 && b < 0x7F && b != UInt8(ascii: "\"") && b != UInt8(ascii: "\\") {
            s.unicodeScalars.append(Unicode.Scalar(b))
        } else {
            s += "\\x" + (b < 16 ? "0" : "") + String(b, radix: 16)
        }
    }
    return s + "\""
}

/// The flags of an INIT reply by name, for the one info line a mount produces.
func initFlagNames(_ flags: InitFlags) -> String {
    let names: [(InitFlags, String)] = [
        (.asyncRead, "async_read"), (.posixLocks, "posix_locks"), (.atomicOTrunc, "atomic_o_trunc"),
        (.exportSupport, "export_support"), (.bigWrites, "big_writes"), (.dontMask, "dont_mask"),
        (.flockLocks, "flock_locks"), (.autoInvalData, "auto_inval_data"), (.doReaddirplus, "readdirplus"),
        (.readdirplusAuto, "readdirplus_auto"), (.asyncDIO, "async_dio"), (.writebackCache, "writeback_cache"),
        (.parallelDirops, "parallel_dirops"), (.handleKillpriv, "handle_killpriv"), (.posixACL, "posix_acl"),
        (.maxPages, "max_pages"), (.cacheSymlinks, "cache_symlinks"), (.explicitInvalData, "explicit_inval_data"),
        (.submounts, "submounts"), (.handleKillprivV2, "handle_killpriv_v2"), (.setxattrExt, "setxattr_ext"),
        (.initExt, "init_ext"), (.securityContext, "security_ctx"), (.createSuppGroup, "create_supp_group"),
        (.directIOAllowMmap, "direct_io_allow_mmap"),
    ]
    return names.filter { flags.contains($0.0) }.map(\.1).joined(separator: ",")
}

/// A writer that passes everything to `base` and keeps a copy of the reply's first
/// bytes (header and op struct), for the debug line.
struct RecordingWriter<Base: FuseWriter>: FuseWriter {
    var base: Base
    var head: [UInt8] = []
    static var keep: Int { 160 }

    init(base: Base) { self.base = base }

    var capacity: Int { base.capacity }
    var written: Int { base.written }

    private mutating func remember(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        guard offset < Self.keep else { return }
        let end = min(offset + bytes.count, Self.keep)
        if head.count < end { head.append(contentsOf: repeatElement(0, count: end - head.count)) }
        for i in offset..<end { head[i] = bytes[i - offset] }
    }

    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let at = base.written
        guard base.write(bytes) else { return false }
        remember(bytes, at: at)
        return true
    }

    mutating func overwrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool {
        guard base.overwrite(bytes, at: offset) else { return false }
        remember(bytes, at: offset)
        return true
    }

    mutating func withIOVecs<E: Error>(count: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int) throws(E) -> Int? {
        try base.withIOVecs(count: count, body)
    }
}
