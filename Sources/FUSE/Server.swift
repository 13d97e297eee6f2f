#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Posix

/// What the dispatcher itself decides; everything else is the filesystem's business.
public struct ServerOptions: Sendable {
    /// The largest READ/WRITE payload: 1 MiB at most, 4 KiB at least.
    public static let maximumWrite = 1 << 20
    public static let minimumWrite = 4096

    /// max_write announced at INIT; clamped to [4 KiB, 1 MiB].
    public private(set) var maxWrite: Int

    public init(maxWrite: Int = ServerOptions.maximumWrite) {
        self.maxWrite = min(max(maxWrite, Self.minimumWrite), Self.maximumWrite)
    }

    /// max_pages announced at INIT: enough 4 KiB pages for one max_write payload.
    public var maxPages: Int { (maxWrite + 4095) / 4096 }

    /// The largest READ the kernel may send. It bounds reads by max_pages, which is
    /// ours with MAX_PAGES but its default of 32 pages (128 KiB) without; a reply
    /// buffer must hold this much data, since a short read means end of file.
    public var maxRead: Int { max(maxWrite, 32 * 4096) }
}

/// The FUSE dispatcher: decodes one request from a `FuseReader`, validates it,
/// calls the filesystem and encodes the reply into a `FuseWriter`. It does not
/// know which transport carried the request. Safe to call from many threads.
///
/// A request's way through the files of this module: `handle` (here) counts it and,
/// with debug on, describes it (RequestLog.swift); `dispatch` (here) checks the header
/// and the session and routes the opcode to its handler. Each handler has one shape,
/// `handleX(request, &reader, &writer) throws(Errno) -> reply length`: decode the fixed
/// struct and names (RequestDecoding.swift), validate, call the filesystem, reply
/// (ReplyEncoding.swift). Handlers live by family: Session.swift (INIT, DESTROY),
/// EntryHandlers.swift (names and lookup counts), AttributeHandlers.swift,
/// FileHandlers.swift, DirectoryHandlers.swift, XattrHandlers.swift, LockWait.swift.
/// An error thrown by a handler becomes the reply's errno.
public final class Server<FS: FileSystem>: Sendable {
    public let filesystem: FS
    public let options: ServerOptions
    let logger: Logger
    /// Waiting for INIT, INIT in progress, or running, and what INIT agreed (Session.swift).
    let session = SessionState()
    /// Requests, errors and latencies since start (see Statistics.swift).
    public let statistics = RequestStatistics()

    public init(filesystem: FS, options: ServerOptions, logger: Logger) {
        self.filesystem = filesystem
        self.options = options
        self.logger = logger
    }

    /// Handles one request. Returns the reply length (what the transport hands
    /// back to the kernel), or 0 when there is no reply: FORGET, BATCH_FORGET,
    /// INTERRUPT, a request too broken to answer, or a writer too small for the reply.
    /// `queue` is for log lines only.
    public func handle<R: FuseReader, W: FuseWriter>(_ reader: inout R, _ writer: inout W, queue: Int = 0) -> Int {
        if logger.isEnabled(.debug) { return handleDescribed(&reader, &writer, queue: queue) }
        return handleCounted(&reader, &writer).length
    }

    /// Handles one request and counts it in `statistics`; returns the reply length, the
    /// opcode and the errno replied, if any.
    func handleCounted<R: FuseReader, W: FuseWriter>(_ reader: inout R, _ writer: inout W)
        -> (length: Int, opcode: UInt32, result: Errno?) {
        let began = Sys.monotonicNanoseconds()
        guard let header = reader.readWire(fuse_in_header.self) else {
            // Without a whole header there is no unique id to answer to.
            logger.debug("request shorter than fuse_in_header (\(reader.remaining) bytes): dropped")
            return (0, 0, nil)
        }
        let start = writer.written
        let opcode = Opcode(rawValue: header.opcode)
        var result: Errno? = nil
        var length: Int
        do {
            length = try dispatch(opcode, header, &reader, &writer)
        } catch {
            result = error
            length = Self.replyError(error, header.unique, &writer, start: start)
        }
        // A reply's header length is what was written, unless an error replaced
        // a reply already under way (then only the header counts).
        assert(length == 0 || result != nil || writer.written - start == length,
               "reply length \(length) but \(writer.written - start) bytes written")
        statistics.record(opcode: header.opcode, errno: result?.rawValue ?? 0,
                          nanoseconds: Sys.monotonicNanoseconds() &- began)
        if let result { warnIfResourceLimit(header.opcode, result) }
        return (length, header.opcode, result)
    }

    // MARK: routing

    /// Checks the header against what the transport delivered and the session state,
    /// then hands the request to its opcode's handler.
    private func dispatch<R: FuseReader, W: FuseWriter>(
        _ opcode: Opcode?, _ h: fuse_in_header, _ r: inout R, _ w: inout W
    ) throws(Errno) -> Int {
        // The header must describe exactly the bytes the transport delivered.
        guard Int(h.len) >= FuseWire.inHeaderSize, Int(h.len) - FuseWire.inHeaderSize == r.remaining else {
            throw .invalidArgument
        }
        guard let opcode else { throw .noSys }
        // INIT opens the session and has no request extensions.
        if opcode == .initialize { return try handleInit(RequestHead(h, extensionLength: 0), &r, &w) }
        guard session.isRunning else {
            // Outside a session: EIO, except for the requests that are never answered.
            if opcode.isNeverAnswered { return 0 }
            throw .ioError
        }
        let extensionLength = Int(h.total_extlen) * 8
        guard extensionLength <= r.remaining else { throw .invalidArgument }
        let q = RequestHead(h, extensionLength: extensionLength)

        switch opcode {
        case .initialize:     return 0 // answered above, before the session check
        case .destroy:        return try handleDestroy(q, &r, &w)
        case .notifyReply:    return try handleNotifyReply(q, &r, &w)
        // Entries and names (EntryHandlers.swift)
        case .lookup:         return try handleLookup(q, &r, &w)
        case .forget:         return try handleForget(q, &r, &w)
        case .batchForget:    return try handleBatchForget(q, &r, &w)
        case .mknod:          return try handleMknod(q, &r, &w)
        case .mkdir:          return try handleMkdir(q, &r, &w)
        case .symlink:        return try handleSymlink(q, &r, &w)
        case .readlink:       return try handleReadlink(q, &r, &w)
        case .link:           return try handleLink(q, &r, &w)
        case .unlink:         return try handleUnlink(q, &r, &w)
        case .rmdir:          return try handleRmdir(q, &r, &w)
        case .rename:         return try handleRename(q, &r, &w)
        case .rename2:        return try handleRename2(q, &r, &w)
        // Attributes and the filesystem as a whole (AttributeHandlers.swift)
        case .getattr:        return try handleGetattr(q, &r, &w)
        case .setattr:        return try handleSetattr(q, &r, &w)
        case .access:         return try handleAccess(q, &r, &w)
        case .statfs:         return try handleStatfs(q, &r, &w)
        case .syncfs:         return try handleSyncfs(q, &r, &w)
        // Files and data (FileHandlers.swift)
        case .open:           return try handleOpen(q, &r, &w)
        case .create:         return try handleCreate(q, &r, &w)
        case .tmpfile:        return try handleTmpfile(q, &r, &w)
        case .read:           return try handleRead(q, &r, &w)
        case .write:          return try handleWrite(q, &r, &w)
        case .flush:          return try handleFlush(q, &r, &w)
        case .fsync:          return try handleFsync(q, &r, &w)
        case .fallocate:      return try handleFallocate(q, &r, &w)
        case .lseek:          return try handleLseek(q, &r, &w)
        case .copyFileRange:  return try handleCopyFileRange(q, &r, &w)
        case .release:        return try handleRelease(q, &r, &w)
        // Directories (DirectoryHandlers.swift)
        case .opendir:        return try handleOpendir(q, &r, &w)
        case .readdir:        return try handleReaddir(q, &r, &w)
        case .readdirplus:    return try handleReaddirplus(q, &r, &w)
        case .fsyncdir:       return try handleFsyncdir(q, &r, &w)
        case .releasedir:     return try handleReleasedir(q, &r, &w)
        // Extended attributes (XattrHandlers.swift)
        case .setxattr:       return try handleSetxattr(q, &r, &w)
        case .getxattr:       return try handleGetxattr(q, &r, &w)
        case .listxattr:      return try handleListxattr(q, &r, &w)
        case .removexattr:    return try handleRemovexattr(q, &r, &w)
        // Locks (LockWait.swift)
        case .getlk:          return try handleGetlk(q, &r, &w)
        case .setlk:          return try handleSetlk(q, &r, &w)
        case .setlkw:         return try handleSetlkw(q, &r, &w)
        case .interrupt:      return try handleInterrupt(q, &r, &w)
        // Not served: no ioctls on a shared file, no block mapping, no poll, no DAX window.
        case .ioctl:          throw .notTTY
        case .bmap, .poll, .setupMapping, .removeMapping: throw .noSys
        }
    }
}
