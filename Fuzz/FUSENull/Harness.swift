#if canImport(Glibc)
import Glibc
#endif
import FUSE
import FuzzSupport
import Posix

// The FUSE dispatcher over a filesystem that implements nothing: every
// request is decoded, validated and answered by the dispatcher alone (each
// method is the protocol's ENOSYS default). Input layout and invariants: see
// FUSEDriver. A fresh session per input, so inputs replay alone.

struct NullFileSystem: FileSystem {}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFUSENull(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(UnsafeRawBufferPointer(start: data, count: size))
    let server = Server(filesystem: NullFileSystem(), options: ServerOptions(), logger: .discarding)
    FUSEDriver.run(server, &input)
    return 0
}

#if !FUZZING
@main struct Replay {
    static func main() { exit(replayMain(fuzzFUSENull, seeds: { FUSESeeds.withPrefixes([[0x05], [0x0c]]) },
                                   dictionary: { FUSESeeds.dictionary })) }
}
#endif
