#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// The same work as the FUSE cells, done with plain system calls on the host
/// directory: the ceiling a daemon can approach. Calls Glibc directly on purpose,
/// since the cost of the bare call is what is measured.
final class SyscallWorker: @unchecked Sendable {
    // Written by the creating thread before pthread_create and read back after
    // pthread_join, which order the accesses; the worker thread owns it in between.
    let operation: Operation
    let directoryFD: Int32
    let readFD: Int32
    let writeFD: Int32
    let deadline: UInt64
    let index: Int
    var operations = 0
    var latencies: [UInt64] = []
    var error: String?

    init(operation: Operation, directoryFD: Int32, readFD: Int32, writeFD: Int32, deadline: UInt64, index: Int) {
        self.operation = operation
        self.directoryFD = directoryFD
        self.readFD = readFD
        self.writeFD = writeFD
        self.deadline = deadline
        self.index = index
        latencies.reserveCapacity(1 << 20)
    }

    func run() {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0xa5, count: 1 << 20)
        var n = index &* 7919
        var st = stat()
        while true {
            let started = Sys.monotonicNanoseconds()
            if started >= deadline { return }
            var ok = true
            switch operation {
            case .getattr:
                ok = fstatat(directoryFD, Fixture.statFile, &st, AT_SYMLINK_NOFOLLOW) == 0
            case .lookupForget:
                let fd = openat(directoryFD, Fixture.statFile, CVFS_O_PATH | O_NOFOLLOW | O_CLOEXEC)
                ok = fd >= 0 && fstat(fd, &st) == 0
                if fd >= 0 { close(fd) }
            case .read4k, .read1m:
                let size = operation.bytes
                ok = pread(readFD, buffer, size, off_t(Fixture.offset(n, size: size))) == size
            case .write4k, .write1m:
                let size = operation.bytes
                ok = pwrite(writeFD, buffer, size, off_t(Fixture.offset(n, size: size))) == size
            case .createCycle:
                let name = "s\(index)-\(n)"
                let fd = openat(directoryFD, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
                ok = fd >= 0 && pwrite(fd, buffer, 4096, 0) == 4096
                if fd >= 0 { close(fd) }
                ok = ok && unlinkat(directoryFD, name, 0) == 0
            case .readdirplus:
                // What READDIRPLUS needs at least: the names, and the attributes of each.
                let fd = openat(directoryFD, Fixture.listDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                guard fd >= 0, let dir = fdopendir(fd) else {
                    if fd >= 0 { close(fd) }
                    ok = false
                    break
                }
                while let entry = readdir(dir) {
                    ok = withUnsafeBytes(of: entry.pointee.d_name) { name in
                        fstatat(fd, name.baseAddress!.assumingMemoryBound(to: CChar.self), &st, AT_SYMLINK_NOFOLLOW) == 0
                    } && ok
                }
                closedir(dir)
            }
            if !ok {
                error = "\(operation.rawValue): errno \(errno)"
                return
            }
            n &+= 1
            operations += 1
            latencies.append(Sys.monotonicNanoseconds() &- started)
        }
    }
}

/// Runs `operation` on `depth` threads for `seconds` against `directory`.
func runSyscalls(_ operation: Operation, depth: Int, seconds: Double, directory: String) -> CellResult {
    var result = CellResult(bytesPerOperation: operation.bytes)
    let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    let readFD = open(directory + "/" + Fixture.readFile, O_RDONLY | O_CLOEXEC)
    let writeFD = open(directory + "/" + Fixture.writeFile, O_RDWR | O_CLOEXEC)
    defer { for fd in [dirFD, readFD, writeFD] where fd >= 0 { close(fd) } }
    guard dirFD >= 0, readFD >= 0, writeFD >= 0 else {
        result.error = "cannot open the fixture in \(directory): errno \(errno)"
        return result
    }
    let start = Sys.monotonicNanoseconds()
    let deadline = start + UInt64(seconds * 1e9)
    let workers = (0..<depth).map {
        SyscallWorker(operation: operation, directoryFD: dirFD, readFD: readFD, writeFD: writeFD, deadline: deadline, index: $0)
    }
    var threads: [pthread_t] = []
    for worker in workers {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(worker).toOpaque()
        let rc = pthread_create(&thread, nil, { context in
            guard let context else { return nil }
            let worker = Unmanaged<SyscallWorker>.fromOpaque(context).takeRetainedValue()
            worker.run()
            return nil
        }, context)
        if rc == 0 {
            threads.append(thread)
        } else {
            Unmanaged<SyscallWorker>.fromOpaque(context).release()
            result.error = "pthread_create failed: \(rc)"
        }
    }
    for thread in threads { pthread_join(thread, nil) }
    result.seconds = Double(Sys.monotonicNanoseconds() - start) / 1e9
    for worker in workers {
        result.operations += worker.operations
        result.latencies += worker.latencies
        if let e = worker.error { result.error = e }
    }
    return result
}
