#if canImport(Glibc)
import Glibc
#endif
import CFuse3
import CVirtioFS
import FUSE
import Posix
import Synchronization

/// A host FUSE mount and its /dev/fuse channels, made before any request is served
/// (and, in the daemon, before the sandbox is entered, so the mount lives in the host's
/// mount namespace). libfuse is used for the mount and unmount only.
///
/// Mount options: fs name "virtiofsd", `allow_other` and `default_permissions`, the
/// options a guest's virtio-fs mount always has: every user may enter the mount and
/// the kernel checks permissions (mode bits, ACLs) from the attributes we return.
///
/// `unmountedOnExit`: the mount also gets `auto_unmount`, which leaves a small helper
/// (fusermount3) outside, waiting for this process to exit; it then unmounts. A
/// sandboxed process can neither see the mount point nor call umount2, so it never
/// unmounts itself: a clean stop, a crash and SIGKILL all end in the helper's unmount,
/// never in a dead "Transport endpoint is not connected" mount.
public final class HostFUSEMount: @unchecked Sendable {
    // Safety of @unchecked Sendable: everything is set in init; `unmount` runs once,
    // from the session's `run` (one thread) or deinit.
    public let mountpoint: String
    public let unmountedOnExit: Bool
    private let session: OpaquePointer
    let channels: [Int32]
    private var mounted = true

    /// Mounts `mountpoint` and opens `threads` channels (clones of the session's /dev/fuse
    /// descriptor). Makes no thread; libfuse may run fusermount3 (a child process).
    public init(mountpoint: String, threads: Int, unmountedOnExit: Bool = false, logger: Logger) throws(Errno) {
        self.mountpoint = mountpoint
        self.unmountedOnExit = unmountedOnExit
        let options = "fsname=virtiofsd,allow_other,default_permissions" + (unmountedOnExit ? ",auto_unmount" : "")
        let arguments = ["virtiofsd", "-o", options]
        let cArguments = arguments.map { strdup($0) }
        defer { cArguments.forEach { free($0) } }
        var argv = cArguments
        var ops = fuse_lowlevel_ops()
        let created: OpaquePointer? = argv.withUnsafeMutableBufferPointer { vector in
            var args = fuse_args(argc: Int32(vector.count), argv: vector.baseAddress, allocated: 0)
            let se = fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, nil)
            fuse_opt_free_args(&args)
            return se
        }
        guard let created else {
            logger.error("fuse_session_new failed")
            throw .invalidArgument
        }
        session = created
        let mountResult = mountpoint.withCString { fuse_session_mount(created, $0) }
        guard mountResult == 0 else {
            fuse_session_destroy(created)
            logger.error("mounting \(mountpoint) failed")
            throw .ioError
        }
        let sessionFD = fuse_session_fd(created)

        // Each thread reads its own clone of the channel, so a slow request on one
        // never holds up replies written on another.
        var opened: [Int32] = []
        do throws(Errno) {
            for _ in 0..<max(threads, 1) {
                let fd = try Sys.openat(AT_FDCWD, "/dev/fuse", O_RDWR)
                opened.append(fd)
                try Sys.fuseDeviceClone(fd, sessionFD: sessionFD)
            }
        } catch {
            opened.forEach { Sys.close($0) }
            fuse_session_unmount(created)
            fuse_session_destroy(created)
            logger.error("cloning /dev/fuse failed: \(error)")
            throw error
        }
        channels = opened
    }

    deinit {
        unmount()
        channels.forEach { Sys.close($0) }
        fuse_session_destroy(session)
    }

    /// Lazy unmount; once the last user of the mount is gone the kernel aborts the
    /// connection and every blocked read returns ENODEV. With `unmountedOnExit` this
    /// does nothing: the helper unmounts once the process is gone.
    func unmount() {
        guard mounted else { return }
        mounted = false
        if unmountedOnExit { return }
        fuse_session_unmount(session)
    }
}

/// Serves a `Server` through a host FUSE mount: the kernel's /dev/fuse instead of
/// a virtqueue. Requests are read and answered here, so the dispatcher sees exactly
/// what a guest would send.
public final class HostFUSESession<FS: FileSystem>: @unchecked Sendable {
    // Safety of @unchecked Sendable: set in init; `run` is called once.
    public var mountpoint: String { mount.mountpoint }
    private let mount: HostFUSEMount
    private let server: Server<FS>
    private let logger: Logger

    /// Serves `mount`, made beforehand (e.g. before a sandbox).
    public init(mount: HostFUSEMount, server: Server<FS>, logger: Logger) {
        self.mount = mount
        self.server = server
        self.logger = logger
    }

    /// Mounts `mountpoint` with one channel per thread, unmounted again by `run` or deinit.
    public convenience init(mountpoint: String, server: Server<FS>, threads: Int, logger: Logger) throws(Errno) {
        self.init(mount: try HostFUSEMount(mountpoint: mountpoint, threads: threads, logger: logger), server: server, logger: logger)
    }

    private func waitForShutdown(_ shutdownFD: Int32, _ exited: Int32) {
        while true {
            let (shutdown, unmounted): (Int16, Int16)
            do {
                (shutdown, unmounted) = try Sys.pollPair(shutdownFD, exited)
            } catch {
                logger.error("poll on the shutdown descriptor failed (\(error)); stopping")
                return
            }
            if shutdown != 0 {
                logger.info("shutting down: \(mount.unmountedOnExit ? "the mount goes when this process exits" : "unmounting \(mountpoint)")")
                return
            }
            if unmounted != 0 {
                logger.info("\(mountpoint) was unmounted")
                return
            }
        }
    }

    /// Serves requests on one thread per channel until `shutdownFD` becomes
    /// readable or the mount goes away (e.g. `umount` from outside), then
    /// unmounts (unless the mount is `unmountedOnExit`) and returns once every
    /// thread has stopped.
    public func run(shutdownFD: Int32) {
        let exited: Int32
        let stop: Int32
        do {
            exited = try Sys.eventfd()
            do { stop = try Sys.eventfd() } catch {
                Sys.close(exited)
                throw error
            }
        } catch {
            logger.error("eventfd: \(error)")
            mount.unmount()
            return
        }
        defer {
            Sys.close(exited)
            Sys.close(stop)
        }

        var threads: [pthread_t] = []
        for fd in mount.channels {
            // Non-blocking, so a worker waits in poll, where `stop` reaches it too, and a
            // request another channel took first is EAGAIN rather than a wait.
            do { try Sys.setNonBlocking(fd) } catch {
                logger.error("O_NONBLOCK on a /dev/fuse channel: \(error)")
                continue
            }
            let worker = ChannelWorker(server: server, fd: fd, exited: exited, stop: stop, logger: logger)
            do {
                threads.append(try Sys.startThread { worker.serve() })
            } catch {
                logger.error("pthread_create: \(error)")
            }
        }
        if !threads.isEmpty {
            waitForShutdown(shutdownFD, exited)
        }
        // The workers finish the request in hand and return, whether or not the
        // connection ends now (with `unmountedOnExit` it ends only with the process).
        try? Sys.eventfdSignal(stop)
        mount.unmount()
        for thread in threads {
            Sys.joinThread(thread)
        }
    }
}

/// One thread's loop: read a request, dispatch it, write the reply.
/// The buffers are reused for every request.
private final class ChannelWorker<FS: FileSystem>: @unchecked Sendable {
    // Owned by exactly one thread once `serve` starts.
    let server: Server<FS>
    let fd: Int32
    let exited: Int32
    let stop: Int32
    let logger: Logger

    init(server: Server<FS>, fd: Int32, exited: Int32, stop: Int32, logger: Logger) {
        self.server = server
        self.fd = fd
        self.exited = exited
        self.stop = stop
        self.logger = logger
    }

    func serve() {
        // The kernel fails a request that does not fit the read buffer: room for
        // max_write plus the header and WRITE's op struct.
        let request = UnsafeMutableRawBufferPointer.allocate(byteCount: server.options.maxWrite + 4096, alignment: 8)
        // And room for the largest READ reply.
        let reply = UnsafeMutableRawBufferPointer.allocate(byteCount: server.options.maxRead + 4096, alignment: 8)
        // Replies to requests answered late (parked lock waits) go through this channel too.
        let late = DeviceReplies(fd: fd)
        defer {
            late.close()
            request.deallocate()
            reply.deallocate()
            try? Sys.eventfdSignal(exited)
        }
        while true {
            do {
                // POLLERR on the channel (connection gone) falls through to read's ENODEV.
                let (_, stopping) = try Sys.pollPair(fd, stop)
                if stopping != 0 { return }
            } catch {
                logger.error("poll on /dev/fuse: \(error)")
                return
            }
            let n: Int
            do {
                n = try Sys.read(fd, request)
            } catch {
                switch error.rawValue {
                case ENOENT, EAGAIN:
                    continue // the request was interrupted before we got it
                case ENODEV:
                    return // unmounted
                default:
                    logger.error("reading /dev/fuse: \(error)")
                    return
                }
            }
            var reader = MemoryReader(UnsafeRawBufferPointer(rebasing: request[0..<n]))
            var writer = DeviceWriter(MemoryWriter(reply), late: late)
            let length = server.handle(&reader, &writer)
            guard length > 0 else { continue }
            do {
                _ = try Sys.write(fd, UnsafeRawBufferPointer(rebasing: reply[0..<length]))
            } catch {
                switch error.rawValue {
                case ENOENT:
                    continue // interrupted meanwhile; the kernel no longer wants it
                case ENODEV:
                    return
                default:
                    logger.error("writing a reply to /dev/fuse: \(error)")
                }
            }
        }
    }
}

/// Late replies for one /dev/fuse channel: a late reply is one write of the
/// whole reply, from whichever thread finished it, until the channel's thread ends.
final class DeviceReplies: Sendable {
    let fd: Int32
    /// Whether the channel still serves; writes happen under this lock so none
    /// follows `close`.
    private let open = Mutex(true)

    init(fd: Int32) { self.fd = fd }

    func close() { open.withLock { $0 = false } }

    /// False when the channel is closed or the kernel no longer waits for the
    /// request (ENOENT: it was interrupted and abandoned).
    func send(_ reply: UnsafeRawBufferPointer) -> Bool {
        open.withLock { isOpen -> Bool in
            guard isOpen else { return false }
            do {
                _ = try Sys.write(fd, reply)
                return true
            } catch {
                return false
            }
        }
    }
}

/// The late reply of one request read from /dev/fuse.
private final class DeviceLateReply: LateReply {
    let replies: DeviceReplies
    init(_ replies: DeviceReplies) { self.replies = replies }
    func send(_ reply: UnsafeRawBufferPointer) -> Bool { replies.send(reply) }
}

/// The reply buffer of one request, which the dispatcher may detach to answer later.
struct DeviceWriter: FuseWriter {
    var buffer: MemoryWriter
    let late: DeviceReplies

    init(_ buffer: MemoryWriter, late: DeviceReplies) {
        self.buffer = buffer
        self.late = late
    }

    var capacity: Int { buffer.capacity }
    var written: Int { buffer.written }
    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Bool { buffer.write(bytes) }
    mutating func overwrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool { buffer.overwrite(bytes, at: offset) }
    mutating func withIOVecs<E: Error>(count: Int, _ body: (UnsafeBufferPointer<iovec>) throws(E) -> Int) throws(E) -> Int? {
        try buffer.withIOVecs(count: count, body)
    }
    /// The request is answered by a write of its own later; `handle` then returns 0 and nothing is written now.
    mutating func detach() -> (any LateReply)? { DeviceLateReply(late) }
}
