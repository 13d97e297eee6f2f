#if canImport(Glibc)
import Glibc
#endif
import Posix

/// Reads a fuzzer input front to back. Every read succeeds: past the end it
/// yields zeros, so a harness never has to handle "too short" itself.
public struct FuzzInput {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var position = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - position }
    public var isEmpty: Bool { remaining == 0 }

    public mutating func byte() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func integer<T: FixedWidthInteger>(_: T.Type = T.self) -> T {
        var value = T.zero
        for i in 0..<MemoryLayout<T>.size { value |= T(truncatingIfNeeded: byte()) << (8 * i) }
        return value
    }

    /// Up to `count` bytes (fewer at the end of the input).
    public mutating func take(_ count: Int) -> UnsafeRawBufferPointer {
        let n = max(0, min(count, remaining))
        defer { position += n }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
    }

    /// Everything not read yet.
    public mutating func rest() -> UnsafeRawBufferPointer { take(remaining) }
}

/// Stops the run the way libFuzzer notices: a crash with a message.
public func fuzzFailure(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError("fuzz invariant broken: \(message)", file: file, line: line)
}

/// The lowest free descriptor number: a received or opened descriptor that was
/// not closed shows up as a change of this value from the start of an input to
/// its end.
public func lowestFreeDescriptor() -> Int32 {
    guard let fd = try? Sys.dup(0) else { return -1 }
    Sys.close(fd)
    return fd
}

/// Without libFuzzer a harness is a replayer: it runs each file named on the
/// command line (or every file in a named directory) through its entry point
/// once, so a seed corpus or a crash reproducer can be run in any build.
/// `--write-seeds DIR` instead writes the harness's seed inputs into DIR, and
/// `--write-dictionary FILE` its libFuzzer dictionary.
public func replayMain(_ entry: (UnsafePointer<UInt8>?, Int) -> Int32,
                       seeds: () -> [(String, [UInt8])], dictionary: () -> [String] = { [] }) -> Int32 {
    var paths = Array(CommandLine.arguments.dropFirst())
    // Absolute paths: a harness may move the thread's working directory (the
    // passthrough backend does for path-based xattr calls).
    var cwd = [CChar](repeating: 0, count: 4096)
    if getcwd(&cwd, cwd.count) != nil {
        let base = String(cString: cwd)
        paths = paths.map { $0.hasPrefix("/") || $0.hasPrefix("--") ? $0 : base + "/" + $0 }
    }
    if paths.count == 2 && paths[0] == "--write-dictionary" {
        let text = Array(dictionary().map { $0 + "\n" }.joined().utf8)
        guard let fd = try? Sys.openat(AT_FDCWD, paths[1], O_WRONLY | O_CREAT | O_TRUNC, 0o644) else { return 1 }
        _ = text.withUnsafeBytes { try? Sys.writeAll(fd, $0) }
        Sys.close(fd)
        return 0
    }
    if paths.count == 2 && paths[0] == "--write-seeds" {
        for (name, bytes) in seeds() {
            let path = paths[1] + "/" + name
            guard let fd = try? Sys.openat(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, 0o644) else {
                print("cannot write \(path)")
                return 1
            }
            _ = bytes.withUnsafeBytes { try? Sys.writeAll(fd, $0) }
            Sys.close(fd)
            // The seed must pass the harness's own checks.
            _ = bytes.withUnsafeBufferPointer { entry($0.baseAddress, $0.count) }
        }
        return 0
    }
    if paths.isEmpty {
        print("usage: \(CommandLine.arguments.first ?? "harness") FILE|DIR...  (replays inputs; build with `make fuzz` to fuzz)")
        return 2
    }
    var ran = 0
    while let path = paths.first {
        paths.removeFirst()
        if let dir = opendir(path) {
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                if name != "." && name != ".." { names.append(path + "/" + name) }
            }
            closedir(dir)
            paths.insert(contentsOf: names.sorted(), at: 0)
            continue
        }
        guard let data = readWholeFile(path) else {
            print("cannot read \(path)")
            return 1
        }
        _ = data.withUnsafeBufferPointer { entry($0.baseAddress, $0.count) }
        ran += 1
    }
    print("replayed \(ran) inputs")
    return 0
}

func readWholeFile(_ path: String) -> [UInt8]? {
    guard let fd = try? Sys.openat(AT_FDCWD, path, O_RDONLY) else { return nil }
    defer { Sys.close(fd) }
    var data: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        guard let n = chunk.withUnsafeMutableBytes({ b in try? Sys.read(fd, b) }) else { return nil }
        if n == 0 { return data }
        data += chunk[0..<n]
    }
}
