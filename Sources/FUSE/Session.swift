import CVirtioFS
import Posix
import Synchronization

// The session: INIT opens it (version and flags agreed once), DESTROY ends it, and
// until INIT has been answered every other request gets EIO.

/// Where the session stands, and what INIT agreed. Shared by every queue thread.
struct SessionState: ~Copyable, Sendable {
    private static var waiting: UInt8 { 0 }
    private static var initializing: UInt8 { 1 }
    private static var running: UInt8 { 2 }
    private let state = Atomic<UInt8>(0)
    private let agreedFlags = Atomic<UInt64>(0)
    private let agreedMinor = Atomic<UInt32>(0)

    init() {}

    /// True once INIT was answered, until DESTROY.
    var isRunning: Bool { state.load(ordering: .acquiring) == Self.running }
    var flags: UInt64 { agreedFlags.load(ordering: .acquiring) }
    var minor: UInt32 { agreedMinor.load(ordering: .acquiring) }

    /// Claims the one INIT that may be in progress; false if a session is running or
    /// another INIT is under way.
    func beginInit() -> Bool {
        state.compareExchange(expected: Self.waiting, desired: Self.initializing, ordering: .acquiringAndReleasing).exchanged
    }

    /// The claimed INIT was answered: the session runs with these terms.
    func start(flags: UInt64, minor: UInt32) {
        agreedFlags.store(flags, ordering: .releasing)
        agreedMinor.store(minor, ordering: .releasing)
        state.store(Self.running, ordering: .releasing)
    }

    /// Back to waiting for INIT: a failed INIT, or DESTROY (which also forgets the terms).
    func reset(forgetTerms: Bool) {
        if forgetTerms {
            agreedFlags.store(0, ordering: .releasing)
            agreedMinor.store(0, ordering: .releasing)
        }
        state.store(Self.waiting, ordering: .releasing)
    }
}

extension Server {
    /// The flags agreed at INIT (empty before INIT and after DESTROY).
    public var negotiatedFlags: InitFlags { InitFlags(rawValue: session.flags) }
    /// The protocol minor agreed at INIT (0 before).
    public var negotiatedMinor: UInt32 { session.minor }

    /// Migration: continues the session the guest negotiated with the source daemon,
    /// which it will not negotiate again. A minor of 0 (no INIT happened) changes nothing.
    public func restoreSession(flags: InitFlags, minor: UInt32) {
        guard minor != 0 else { return }
        session.start(flags: flags.rawValue, minor: minor)
    }

    /// The protocol flags the dispatcher handles itself, whatever the filesystem is.
    public static var dispatcherFlags: InitFlags {
        [.asyncRead, .atomicOTrunc, .exportSupport, .bigWrites, .maxPages, .parallelDirops, .asyncDIO, .initExt]
    }

    /// INIT: agree on a protocol version and on the flags both sides want; the
    /// filesystem picks from what the kernel offers, the dispatcher adds its own.
    func handleInit<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        // Kernels before 7.36 send only the first four fields.
        let legacySize = 16
        guard r.remaining >= legacySize else { throw .invalidArgument }
        let arg = try Self.readPrefix(fuse_init_in.self, size: r.remaining, &r)

        guard session.beginInit() else { throw .ioError }
        var done = false
        defer { if !done { session.reset(forgetTerms: false) } }

        if arg.major > FuseWire.kernelVersion {
            // Tell a newer guest which major we speak; it retries with that.
            var out = fuse_init_out()
            out.major = FuseWire.kernelVersion
            out.minor = FuseWire.kernelMinorVersion
            logger.info("guest offered FUSE \(arg.major).\(arg.minor); asking for \(FuseWire.kernelVersion)")
            return Self.reply(out, q.unique, &w)
        }
        guard arg.major == FuseWire.kernelVersion, arg.minor >= FuseWire.oldestMinorVersion else {
            logger.error("guest FUSE protocol \(arg.major).\(arg.minor) is too old (need 7.\(FuseWire.oldestMinorVersion))")
            throw .protocolError
        }

        var capable = UInt64(arg.flags)
        if capable & InitFlags.initExt.rawValue != 0 {
            capable |= UInt64(arg.flags2) << 32
        }
        let minor = min(arg.minor, FuseWire.kernelMinorVersion)
        if minor < 38 {
            // Security contexts and groups travel as request extensions, which need 7.38's total_extlen.
            capable &= ~(InitFlags.securityContext.rawValue | InitFlags.createSuppGroup.rawValue)
        }
        let wanted = try filesystem.initialize(capable: InitFlags(rawValue: capable))
        let agreed = (wanted.rawValue | Self.dispatcherFlags.rawValue) & capable

        var out = fuse_init_out()
        out.major = FuseWire.kernelVersion
        out.minor = minor
        out.max_readahead = arg.max_readahead
        out.flags = UInt32(truncatingIfNeeded: agreed)
        out.flags2 = UInt32(truncatingIfNeeded: agreed >> 32)
        // Let the guest keep as many requests in flight as it likes; the queues pace it.
        out.max_background = UInt16.max
        out.congestion_threshold = UInt16.max / 4 * 3
        out.max_write = UInt32(options.maxWrite)
        out.time_gran = 1
        out.max_pages = UInt16(options.maxPages)

        let length = Self.reply(out, q.unique, &w)
        guard length > 0 else { return 0 }
        session.start(flags: agreed, minor: minor)
        done = true
        logger.info("guest mounted: FUSE 7.\(arg.minor) offered, 7.\(minor) agreed; flags \(initFlagNames(InitFlags(rawValue: agreed)))")
        return length
    }

    /// DESTROY: the guest unmounted. The filesystem drops its nodes and handles, and
    /// the next session starts with a new INIT.
    func handleDestroy<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        filesystem.destroy()
        session.reset(forgetTerms: true)
        return Self.replyEmpty(q.unique, &w)
    }

    /// NOTIFY_REPLY: never answered. We never ask the guest to retrieve data, so
    /// there is nothing to match it with.
    func handleNotifyReply<R: FuseReader, W: FuseWriter>(_ q: RequestHead, _ r: inout R, _ w: inout W) throws(Errno) -> Int {
        0
    }
}
