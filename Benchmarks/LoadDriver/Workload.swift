#if canImport(Glibc)
import Glibc
#endif

/// The operations the benchmark measures. Each runs the same way against a daemon
/// (as FUSE requests on a virtqueue) and against the host directory (as syscalls).
enum Operation: String, CaseIterable {
    case getattr
    case lookupForget = "lookup+forget"
    case read4k = "read 4KiB"
    case read1m = "read 1MiB"
    case write4k = "write 4KiB"
    case write1m = "write 1MiB"
    case createCycle = "create+write+release+unlink"
    case readdirplus = "readdirplus"

    /// Payload bytes one operation moves (for MB/s); 0 when throughput means nothing.
    var bytes: Int {
        switch self {
        case .read4k, .write4k, .createCycle: return 4096
        case .read1m, .write1m: return 1 << 20
        case .getattr, .lookupForget, .readdirplus: return 0
        }
    }
}

/// Files every target's shared directory starts with.
enum Fixture {
    static let statFile = "stat-me"
    static let readFile = "read-data"
    static let writeFile = "write-data"
    /// A directory of `listEntries` empty files, listed whole by `readdirplus`.
    static let listDirectory = "list"
    static let listEntries = 10_000
    /// Reads and writes walk through this much of a file, so the page cache is warm but offsets vary.
    static let fileSize = 32 << 20

    /// Creates `directory` with the fixture files.
    static func make(_ directory: String) -> Bool {
        guard mkdir(directory, 0o755) == 0 || errno == EEXIST else { return false }
        let chunk = [UInt8](repeating: 0x5a, count: 1 << 20)
        for name in [readFile, writeFile] {
            let fd = open(directory + "/" + name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard fd >= 0 else { return false }
            for _ in 0..<(fileSize >> 20) {
                _ = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            }
            close(fd)
        }
        let fd = open(directory + "/" + statFile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return false }
        close(fd)
        let list = directory + "/" + listDirectory
        guard mkdir(list, 0o755) == 0 || errno == EEXIST else { return false }
        for n in 0..<listEntries {
            let entry = open(list + "/entry-\(n)", O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            guard entry >= 0 else { return false }
            close(entry)
        }
        return true
    }

    /// The offset of the `n`th access of `size` bytes.
    static func offset(_ n: Int, size: Int) -> UInt64 {
        UInt64((n &* size) % fileSize)
    }
}

/// Removes a directory tree (fixture cleanup), without following symlinks.
func removeTree(_ path: String) {
    guard let dir = opendir(path) else { _ = unlink(path); return }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if name == "." || name == ".." { continue }
        let child = path + "/" + name
        var st = stat()
        if lstat(child, &st) == 0, st.st_mode & S_IFMT == S_IFDIR { removeTree(child) } else { _ = unlink(child) }
    }
    closedir(dir)
    _ = rmdir(path)
}
