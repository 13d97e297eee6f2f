#if canImport(Glibc)
import Glibc
#endif
import DaemonConfig
import FUSE
import HostFUSE
import Passthrough
import Posix
import Sandbox
import VhostUser
import XattrMap

/// Runs the daemon for parsed, validated options. Returns the process exit status.
/// Order matters: the listening socket before the sandbox; the sandbox, capabilities
/// and seccomp before any thread exists.
func runDaemon(_ options: DaemonOptions) -> Int32 {
    let logger = Logger(label: "virtiofsd", level: logLevel(options.logLevel),
                        destination: options.syslog ? .syslog : .standardError)
    // From here a stop request must end in a clean exit, not kill us half set up: keep
    // SIGTERM/SIGINT/SIGHUP pending until the signalfd below reads them. Blocked signals
    // are also queued for the namespace child (PID 1) before it has handlers, where the
    // kernel would otherwise drop them.
    var stopSignals = sigset_t()
    sigemptyset(&stopSignals)
    for sig in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&stopSignals, sig) }
    do { try Signals.blockSignals(stopSignals) } catch { fail("blocking SIGTERM/SIGINT: \(error)") }

    // ---- checks that need more than the parser ----
    var xattrMap: XattrMap? = nil
    if let rules = options.xattrmap {
        do { xattrMap = try XattrMap(rules: rules) } catch { fail("--xattrmap: \(error)") }
    }
    // The parser already split, lower-cased and checked the names; only the lookup of
    // each capability number is left.
    var capabilityEdits: [CapabilityEdit] = []
    for change in options.modcaps {
        guard let edit = CapabilityEdit(change: change.add ? .add : .drop, name: change.name) else {
            fail("--\(SandboxError.unknownCapability(change.name))")  // the message starts with "modcaps:"
        }
        capabilityEdits.append(edit)
    }
    let uidMap = singleRange(options.uidMap, option: "--uid-map")
    let gidMap = singleRange(options.gidMap, option: "--gid-map")
    guard let sharedDir = options.sharedDir, let endpoint = options.endpoint else {
        fail("a shared directory and a socket are required (see --help)")
    }
    guard let realShared = realpath(sharedDir, nil) else {
        fail("shared directory \(sharedDir): \(Errno.current)")
    }
    let sharedPath = String(cString: realShared)
    free(realShared)

    logger.info("swift virtiofsd \(daemonVersion)")
    logger.info("shared directory: \(sharedPath)\(options.tag.map { " (tag \($0))" } ?? "")")

    // The same sandbox for both transports.
    let sandbox = SandboxConfiguration(
        mode: sandboxMode(options.sandbox),
        sharedDirectory: sharedPath,
        seccomp: seccompAction(options.seccomp),
        syslog: options.syslog,
        capabilityEdits: capabilityEdits,
        // Even with --inode-file-handles=never the backend falls back to file handles
        // when its descriptor budget runs low, and reopening a handle needs this.
        keepDacReadSearch: true,
        rlimitNofile: options.rlimitNofile,
        uidMap: uidMap, gidMap: gidMap)

    if case .fuseMount(let mountpoint) = endpoint {
        return runHostMount(options, sandbox: sandbox, mountpoint: mountpoint, xattrMap: xattrMap, logger: logger)
    }

    // ---- listening socket, before the sandbox hides the host ----
    let listenFD: Int32
    switch endpoint {
    case .socketPath(let path, let groupName):
        var group: gid_t? = nil
        if let groupName {
            guard let gid = groupID(groupName) else { fail("--socket-group: no group named \(groupName)") }
            group = gid
        }
        do { listenFD = try Listener.bindSocket(path: path, group: group) } catch { fail("--socket-path: \(error)") }
        logger.info("socket: \(path)")
    case .inheritedSocket(let fd):
        do { listenFD = try Listener.adopt(fd: fd) } catch { fail("--fd=\(fd): \(error)") }
        logger.info("socket: inherited descriptor \(fd)")
    case .fuseMount:
        fail("internal: host mount handled above")
    }
    logger.info("sandbox: \(options.sandbox.rawValue), seccomp: \(options.seccomp.rawValue), cache: \(options.cache.rawValue), request queues: \(options.numRequestQueues), thread pool: \(options.threadPoolSize)")

    // ---- sandbox ----
    let isolated: SandboxResult
    do {
        let limit = try Sandbox.raiseFileLimit(sandbox, logger: logger)
        logger.debug("RLIMIT_NOFILE is \(limit)")
        isolated = try Sandbox.enter(sandbox, logger: logger)
        try Sandbox.dropCapabilities(sandbox, logger: logger)
    } catch {
        fail("\(error)")
    }
    let shutdownFD: Int32
    do { shutdownFD = try Signals.blockShutdownSignals() } catch { fail("blocking SIGTERM/SIGINT: \(error)") }

    // ---- the filesystem ----
    let filesystem = openFileSystem(options, sharedPath: sharedPath, root: isolated.root,
                                    procSelfFD: isolated.procSelfFD, xattrMap: xattrMap, logger: logger)
    do { try Sandbox.installSeccomp(sandbox, logger: logger) } catch { fail("\(error)") }

    let server = Server(filesystem: filesystem, options: ServerOptions(), logger: logger)
    var configuration = BackendConfiguration(numRequestQueues: options.numRequestQueues)
    configuration.threadPoolSize = options.threadPoolSize
    let backend = VhostUserBackend(configuration: configuration, handler: FUSEQueueHandler(server: server), logger: logger)
    backend.deviceState = MigrationStateHandler(server: server)

    // ---- one frontend, then exit ----
    logger.info("waiting for the vhost-user frontend")
    let connection: Int32
    do {
        guard let accepted = try acceptFrontend(listenFD: listenFD, shutdownFD: shutdownFD, logger: logger) else {
            return 0
        }
        connection = accepted
    } catch {
        logger.error("accepting the frontend: \(error)")
        return 1
    }
    Sys.close(listenFD)
    logger.info("frontend connected")
    do {
        try backend.serve(connection: connection, shutdownFD: shutdownFD)
    } catch {
        logger.error("\(error)")
        return 1
    }
    filesystem.destroy()
    logger.info("frontend gone; exiting")
    return 0
}

/// Waits for the one frontend: the first connection that sends something. Returns nil
/// when a stop signal comes first.
///
/// A connection that closes before saying anything is not the frontend: another daemon
/// started on the same --socket-path probes whether we still listen, and must not use
/// up the one frontend we serve.
func acceptFrontend(listenFD: Int32, shutdownFD: Int32, logger: Logger) throws(Errno) -> Int32? {
    while true {
        guard let candidate = try Listener.acceptOne(listenFD: listenFD, shutdownFD: shutdownFD) else {
            logger.info("stopped by signal before a frontend connected")
            return nil
        }
        let (_, shutdown) = try Sys.pollPair(candidate, shutdownFD)
        if shutdown != 0 {
            Sys.close(candidate)
            logger.info("stopped by signal before the frontend spoke")
            return nil
        }
        if (try? Sys.peekForData(candidate)) == true { return candidate }
        logger.debug("a connection closed without a message; still waiting for the frontend")
        Sys.close(candidate)
    }
}

/// `--fuse-mount`: the same dispatcher and backend behind a host FUSE mount, for debugging
/// and host-side tests, in the same sandbox, capability set and seccomp filter as a
/// vhost-user daemon. The mount and its /dev/fuse channels are made first, in the host's
/// mount namespace (a namespace entered later would hide the mount from the host), and
/// carried into the sandbox. The sandboxed process cannot unmount (no umount2, and the
/// mount point is out of its view), so the mount gets auto_unmount: libfuse's helper
/// outside unmounts once the daemon has exited, however it ends.
func runHostMount(_ options: DaemonOptions, sandbox: SandboxConfiguration, mountpoint: String, xattrMap: XattrMap?, logger: Logger) -> Int32 {
    logger.info("host FUSE mount at \(mountpoint); sandbox: \(options.sandbox.rawValue), seccomp: \(options.seccomp.rawValue), cache: \(options.cache.rawValue)")
    let mount: HostFUSEMount
    let isolated: SandboxResult
    do {
        let limit = try Sandbox.raiseFileLimit(sandbox, logger: logger)
        logger.debug("RLIMIT_NOFILE is \(limit)")
        do {
            // No thread may exist yet: the sandbox forks. The mount makes none.
            mount = try HostFUSEMount(mountpoint: mountpoint, threads: max(2, options.threadPoolSize),
                                      unmountedOnExit: true, logger: logger)
        } catch {
            fail("--fuse-mount \(mountpoint): \(error)")
        }
        isolated = try Sandbox.enter(sandbox, logger: logger)
        try Sandbox.dropCapabilities(sandbox, logger: logger)
    } catch {
        fail("\(error)")
    }
    let shutdownFD: Int32
    do { shutdownFD = try Signals.blockShutdownSignals() } catch { fail("blocking SIGTERM/SIGINT: \(error)") }
    let filesystem = openFileSystem(options, sharedPath: sandbox.sharedDirectory, root: isolated.root,
                                    procSelfFD: isolated.procSelfFD, xattrMap: xattrMap, logger: logger)
    do { try Sandbox.installSeccomp(sandbox, logger: logger) } catch { fail("\(error)") }
    let server = Server(filesystem: filesystem, options: ServerOptions(), logger: logger)
    let session = HostFUSESession(mount: mount, server: server, logger: logger)
    session.run(shutdownFD: shutdownFD)
    filesystem.destroy()
    return 0
}

/// The passthrough backend over `root` (the shared directory as this process sees it);
/// one that cannot be opened ends the start-up with an error naming `sharedPath`.
func openFileSystem(_ options: DaemonOptions, sharedPath: String, root: String, procSelfFD: Int32?,
                    xattrMap: XattrMap?, logger: Logger) -> PassthroughFileSystem {
    do {
        return try PassthroughFileSystem(
            configuration: passthroughConfiguration(options, root: root, procSelfFD: procSelfFD, xattrMap: xattrMap),
            logger: logger)
    } catch {
        fail("opening the shared directory \(sharedPath): \(error)")
    }
}

func passthroughConfiguration(_ o: DaemonOptions, root: String, procSelfFD: Int32?, xattrMap: XattrMap?) -> PassthroughConfiguration {
    var c = PassthroughConfiguration(root: root, procSelfFD: procSelfFD)
    c.cache = cacheMode(o.cache)
    c.timeout = o.timeout
    c.writeback = o.writeback
    c.xattr = o.xattrEnabled
    c.xattrMap = xattrMap
    c.posixACL = o.posixACL
    c.securityLabel = o.securityLabel
    c.flock = o.flock
    c.posixLocks = o.posixLock
    c.readdirplus = o.readdirplusEnabled
    c.announceSubmounts = o.announceSubmounts
    c.killprivV2 = o.killprivV2
    c.allowDirectIO = o.allowDirectIO
    c.allowMmap = o.allowMmap
    c.inodeFileHandles = inodeFileHandles(o.inodeFileHandles)
    c.readonly = o.readOnly
    c.preserveNoatime = o.preserveNoatime
    c.migration.mode = o.migrationMode == .fileHandles ? .fileHandles : .findPaths
    c.migration.onError = o.migrationOnError == .guestError ? .guestError : .abort
    c.migration.verifyHandles = o.migrationVerifyHandles
    c.migration.confirmPaths = o.migrationConfirmPaths
    return c
}

func singleRange(_ ranges: [IDMapRange], option: String) -> IDMap? {
    guard let first = ranges.first else { return nil }
    if ranges.count > 1 { fail("\(option): only one range is supported") }
    return IDMap(inside: first.inside, outside: first.outside, count: first.count)
}

func logLevel(_ l: DaemonLogLevel) -> LogLevel {
    switch l {
    case .off: return .off
    case .error: return .error
    case .warning: return .warning
    case .info: return .info
    case .debug: return .debug
    case .trace: return .trace
    }
}

// The option model (DaemonConfig) stays free of the implementation modules, so its
// enums have twins in Sandbox and Passthrough. Exhaustive switches, not raw values:
// a case added on one side is a compile error here, never a silent default.

func sandboxMode(_ m: DaemonConfig.SandboxMode) -> IsolationMode {
    switch m {
    case .namespace: return .namespace
    case .chroot: return .chroot
    case .none: return .none
    }
}

func seccompAction(_ a: DaemonConfig.SeccompAction) -> FilterAction {
    switch a {
    case .none: return .none
    case .kill: return .kill
    case .log: return .log
    case .trap: return .trap
    }
}

func cacheMode(_ m: DaemonConfig.CacheMode) -> Passthrough.CacheMode {
    switch m {
    case .never: return .never
    case .metadata: return .metadata
    case .auto: return .auto
    case .always: return .always
    }
}

func inodeFileHandles(_ m: InodeFileHandlesMode) -> InodeFileHandles {
    switch m {
    case .never: return .never
    case .prefer: return .prefer
    case .mandatory: return .mandatory
    }
}
