#if canImport(Glibc)
import Glibc
#endif
import DaemonConfig
import FuzzSupport

// Both command-line syntaxes (QEMU's C virtiofsd `-o a=b,c` and the long
// options), through the public entry point only. The input is the argument
// vector, arguments separated by NUL bytes. Invariants: parsing never traps,
// always ends, and gives an outcome or an error with a message; parsing the
// same arguments twice gives the same answer.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCommandLine(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    let arguments = bytes.split(separator: 0, omittingEmptySubsequences: false).map {
        String(decoding: $0, as: UTF8.self)
    }
    let first = parseCommandLine(arguments)
    let second = parseCommandLine(arguments)
    if first != second { fuzzFailure("two parses of \(arguments) differ") }
    if case .failure(let error) = first, "\(error)".isEmpty { fuzzFailure("error without a message for \(arguments)") }
    return 0
}

#if !FUZZING
@main struct Replay {
    static func main() { exit(replayMain(fuzzCommandLine, seeds: {
        let vectors: [[String]] = [
            ["--socket-path=/run/vfs.sock", "-o", "source=/srv,cache=auto,xattr,flock,timeout=5"],
            ["--socket-path", "/run/vfs.sock", "--shared-dir", "/srv", "--cache", "never", "--sandbox", "chroot",
             "--thread-pool-size=4", "--num-request-queues", "2"],
            ["-f", "-d", "--socket-path=/s", "-o", "source=/srv,xattrmap=:prefix:all::user.virtiofs.::bad:all:::,no_posix_lock"],
            ["--fd", "3", "--shared-dir", "/srv", "--inode-file-handles=mandatory", "--xattrmap", ":ok:all:::",
             "--uid-map", ":0:1000:1:", "--translate-uid", "map:0:1000:1", "--rlimit-nofile", "4096"],
            ["--socket-path=/s", "--shared-dir=/srv", "--sandbox=none", "--seccomp=kill", "--modcaps=-sys_admin:+chown",
             "--log-level", "debug", "--announce-submounts", "--readonly", "--writeback", "--allow-direct-io"],
            ["--print-capabilities"],
            ["--socket-path=/s", "-o", "source=/srv", "-o", "cache=always,writeback,sandbox=namespace,modcaps=+sys_admin"],
            ["--shared-dir", "/srv"],
            ["--socket-path=/s", "--shared-dir", "/srv", "--cache", "bogus"],
        ]
        return vectors.enumerated().map { i, args in
            ("args-\(i)", Array(args.map { Array($0.utf8) }.joined(separator: [0])))
        }
    }, dictionary: {
        let words = ["--shared-dir", "--socket-path", "--fd", "--cache", "--sandbox", "--xattrmap", "--inode-file-handles",
                     "--thread-pool-size", "--num-request-queues", "--uid-map", "--gid-map", "--translate-uid",
                     "--translate-gid", "--rlimit-nofile", "--modcaps", "--seccomp", "--log-level", "--tag",
                     "--socket-group", "--fuse-mount", "-o", "-f", "-d", "--", "source=", "cache=", "timeout=",
                     "xattrmap=", "modcaps=", "sandbox=", "loglevel=", "auto", "always", "never", "metadata",
                     "none", "chroot", "namespace", "mandatory", "prefer", ",", "=", ":"]
        return words.enumerated().map { dictionaryEntry("word_\($0.offset)", Array($0.element.utf8) + ($0.element.hasPrefix("-") ? [0] : [])) }
    })) }
}
#endif
