#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import FUSE
import FuzzSupport
@testable import Options
import Passthrough
import Posix
import XattrMap

// The FUSE dispatcher over the real passthrough backend, so every opcode ends
// in real system calls on a scratch tree. Input layout: see FUSEDriver; bits
// 5-7 of the first byte and the byte after it pick the backend's options
// (cache mode, xattr support and an xattr map, locks, file handles, read-only,
// writeback...). Each input gets a fresh backend (fresh inode and handle
// tables) and a fresh session; the tree is rebuilt every `resetEvery` inputs,
// and lives in a size-limited tmpfs in a private mount namespace when we may
// mount (as root), so whatever the input writes stays bounded.
//
// Invariants beyond FUSEDriver's: when the backend goes away every descriptor
// it opened is closed (the lowest free descriptor is unchanged), and nothing
// blocks: a request that would wait forever (opening a FIFO, a lock that cannot
// be had) is libFuzzer's timeout, a finding.

private let resetEvery = 256

final class Scratch {
    let root: String
    var inputs = 0

    init() {
        var template = Array("/tmp/virtiofsd-fuzz-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ b in b.baseAddress.flatMap { mkdtemp($0) } }) else {
            fuzzFailure("mkdtemp")
        }
        root = String(cString: made)
        if Sys.geteuid() == 0 {
            do throws(Errno) {
                try Sys.unshare(CVFS_CLONE_NEWNS)
                try Sys.mount(source: nil, target: "/", type: nil, flags: UInt(MS_REC | MS_PRIVATE), data: nil)
                try Sys.mount(source: "fuzz", target: root, type: "tmpfs", flags: 0, data: "size=64m,mode=0755")
            } catch {
                print("passthrough harness: no private tmpfs (\(error)); using \(root) as it is")
            }
        }
        // Writes past 1 MiB fail with EFBIG instead of filling the disk.
        signal(SIGXFSZ, SIG_IGN)
        _ = try? Sys.setrlimit(Int32(RLIMIT_FSIZE.rawValue), rlimit(rlim_cur: 1 << 20, rlim_max: 1 << 20))
        rebuild()
    }

    /// Empties the tree and lays out a small one: a file with data, a directory
    /// with a file, a symlink, a FIFO, a hard link and a file with an xattr.
    func rebuild() {
        guard let dirfd = try? Sys.openat(AT_FDCWD, root, O_RDONLY | O_DIRECTORY) else { fuzzFailure("open \(root)") }
        defer { Sys.close(dirfd) }
        removeContents(dirfd)
        let data = [UInt8](repeating: 0x61, count: 8192)
        if let fd = try? Sys.openat(dirfd, "file", O_WRONLY | O_CREAT | O_TRUNC, 0o644) {
            _ = data.withUnsafeBytes { b in try? Sys.writeAll(fd, b) }
            _ = Array("v".utf8).withUnsafeBytes { b in try? Sys.fsetxattr(fd, "user.k", b, flags: 0) }
            Sys.close(fd)
        }
        try? Sys.mkdirat(dirfd, "dir", 0o755)
        if let fd = try? Sys.openat(dirfd, "dir/inner", O_WRONLY | O_CREAT, 0o600) { Sys.close(fd) }
        try? Sys.symlinkat("file", dirfd, "link")
        try? Sys.symlinkat("/etc/passwd", dirfd, "escape")
        try? Sys.mknodat(dirfd, "fifo", S_IFIFO | 0o644, 0)
        try? Sys.linkat(dirfd, "file", dirfd, "hardlink", flags: 0)
    }

    private func removeContents(_ dirfd: Int32) {
        guard let listing = try? Sys.openat(dirfd, ".", O_RDONLY | O_DIRECTORY) else { return }
        defer { Sys.close(listing) }
        var buffer = [UInt8](repeating: 0, count: 16384)
        var names: [[CChar]] = []
        while let n = buffer.withUnsafeMutableBytes({ b in try? Sys.getdents64(listing, b) }), n > 0 {
            var offset = 0
            while offset < n {
                let recordLength = Int(buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 16, as: UInt16.self) })
                let nameStart = offset + 19
                var name = Array(buffer[nameStart..<(offset + recordLength)].prefix { $0 != 0 }).map { CChar(bitPattern: $0) }
                if name != [46] && name != [46, 46] {
                    name.append(0)
                    names.append(name)
                }
                offset += recordLength
            }
        }
        for name in names {
            if (try? Sys.unlinkat(dirfd, name, flags: 0)) != nil { continue }
            // Directories (and anything made unreadable) are emptied first.
            _ = try? Sys.fchmodat(dirfd, name, 0o700, flags: 0)
            if let sub = try? Sys.openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW) {
                removeContents(sub)
                Sys.close(sub)
            }
            _ = try? Sys.unlinkat(dirfd, name, flags: AT_REMOVEDIR)
        }
    }
}

nonisolated(unsafe) private var scratch: Scratch? = nil
private let xattrRules = try? XattrMap(rules: ":prefix:all::user.virtiofs.::bad:all:::")

func configuration(_ root: String, _ a: UInt8, _ b: UInt8) -> PassthroughConfiguration {
    var c = PassthroughConfiguration(root: root)
    c.cache = CacheMode.allCases[Int(a & 3) % CacheMode.allCases.count]
    c.xattr = a & 4 != 0
    c.posixLocks = b & 1 != 0
    c.flock = b & 2 != 0
    c.writeback = b & 4 != 0
    c.readOnly = b & 8 != 0
    c.inodeFileHandles = [.never, .prefer, .mandatory, .never][Int(b >> 4) & 3]
    c.killprivV2 = b & 64 != 0
    c.readdirplus = b & 128 == 0
    if c.xattr && b & 32 != 0 {
        c.xattrMap = xattrRules
        c.posixACL = true
        c.securityLabel = true
    }
    c.descriptorLimit = 256
    c.fdBudget = Int(a >> 3) * 2
    return c
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFUSEPassthrough(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    if scratch == nil {
        scratch = Scratch()
    }
    guard let scratch else { return 0 }
    scratch.inputs += 1
    if scratch.inputs % resetEvery == 0 { scratch.rebuild() }
    // Measured per input: libFuzzer's symbolizer may open descriptors between inputs.
    let baseline = lowestFreeDescriptor()
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    // Byte 0 is the driver's control byte (bits 5-7 also pick options); byte 1 picks
    // the other options and is not part of the request stream.
    let a = bytes.first.map { $0 >> 5 } ?? 0
    let b = bytes.count > 1 ? bytes[1] : 0
    let stream = Array(bytes.prefix(1)) + Array(bytes.dropFirst(2))
    do {
        let fs: PassthroughFileSystem
        do { fs = try PassthroughFileSystem(configuration: configuration(scratch.root, a, b), logger: .discarding) }
        catch { fuzzFailure("backend would not start: \(error)") }
        let server = Server(filesystem: fs, options: ServerOptions(), logger: .discarding)
        stream.withUnsafeBytes { raw in
            var input = FuzzInput(raw)
            FUSEDriver.run(server, &input)
        }
    }
    let now = lowestFreeDescriptor()
    if now != baseline { fuzzFailure("descriptor leak: lowest free descriptor \(now), was \(baseline)") }
    return 0
}

#if !FUZZING
@main struct Replay {
    static func main() { exit(replayMain(fuzzFUSEPassthrough, seeds: {
        // xattr on, cache never, POSIX and flock locks; xattr map, cache auto;
        // cache auto, read-only, file handles preferred.
        FUSESeeds.withPrefixes([[0x85, 0x03], [0xc5, 0x23], [0x45, 0x18]])
    }, dictionary: { FUSESeeds.dictionary })) }
}
#endif
