#if canImport(Glibc)
import Glibc
#endif
import DaemonConfig
import FUSE
import HostFUSE
import Options
import Passthrough
import Posix
import Sandbox
import VhostUser

/// Runs the daemon for parsed, validated options. Returns the process exit status.
/// Order matters: the listening socket before the sandbox; the sandbox, capabilities
/// and seccomp before any thread exists.
func runDaemon(_ options: DaemonOptions) -> Int32 {
    let logger = makeLogger(options)
    // From here a stop request must end in a clean exit, not kill us half set up: keep
    // SIGTERM/SIGINT/SIGHUP (and SIGUSR1, the statistics dump) pending until a signalfd
    // reads them. Blocked signals are also queued for the namespace child (PID 1) before
    // it has handlers, where the kernel would otherwise drop them.
    var blocked = sigset_t()
    sigemptyset(&blocked)
    for sig in Signals.stopSignals + [SIGUSR1] { sigaddset(&blocked, sig) }
    do { try Signals.blockSignals(blocked) } catch { fail("blocking SIGTERM/SIGINT/SIGHUP/SIGUSR1: \(error)") }
    if let error = validateEnvironment(options, checkDirectory: checkDirectory) { fail(error.description) }
    for warning in options.warnings { logger.warning(warning) }

    // ---- checks that need more than the parser ----
    // The parser already split, lower-cased and checked the names; only the lookup of
    // each capability number is left.
    do { _ = try Sandboxing.resolve(options.modcaps) } catch {
        fail("--\(error)")  // the message starts with "modcaps:"
    }
    let uidMap = options.uidMap
    let gidMap = options.gidMap
    guard let sharedDir = options.sharedDir, let endpoint = options.endpoint else {
        fail("a shared directory and a socket are required (see --help)")
    }
    let sharedPath: String
    do { sharedPath = try Sys.realpath(sharedDir) } catch {
        fail("shared directory \(sharedDir): \(error)")
    }

    logger.info("swift virtiofsd \(daemonVersion), pid \(getpid())")
    logger.info("shared directory: \(sharedPath)\(options.tag.map { " (tag \($0))" } ?? "")")

    // Where the code is mapped, read while /proc is still the host's.
    let codeMappings = Sandboxing.codeMappings()
    // The same sandbox for both transports.
    var sandbox = SandboxConfiguration(
        mode: options.sandbox,
        sharedDirectory: sharedPath,
        seccomp: options.seccomp,
        syslog: options.syslog,
        capabilityEdits: options.modcaps,
        // Even with --inode-file-handles=never the backend falls back to file handles
        // when its descriptor budget runs low, and reopening a handle needs this.
        keepDacReadSearch: true,
        rlimitNofile: options.rlimitNofile,
        uidMap: uidMap, gidMap: gidMap)

    if case .fuseMount(let mountpoint) = endpoint {
        return runHostMount(options, sandbox: sandbox, mountpoint: mountpoint, logger: logger)
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
        do { listenFD = try Listener.adopt(fd: fd) } catch { fail("\(error)") }
        logger.info("socket: inherited descriptor \(fd)")
    case .fuseMount:
        fail("internal: host mount handled above")
    }
    // The statistics socket too: after pivot_root its path is out of reach, the kept
    // descriptor is not.
    var statsFD: Int32? = nil
    if let path = options.statsPath {
        do { statsFD = try Listener.bindSocket(path: path) } catch { fail("--stats: \(error)") }
        logger.info("statistics socket: \(path)")
    }
    if options.daemonize { daemonize(tag: options.tag, logger: logger) }
    logger.info("sandbox: \(options.sandbox.rawValue), seccomp: \(options.seccomp.rawValue), cache: \(options.cache.rawValue), request queues: \(options.numRequestQueues), thread pool: \(options.threadPoolSize)")

    // ---- sandbox ----
    // A socket we created is removed when we end: by the namespace parent (the serving
    // child closes the directory descriptor this holds), or by ourselves without a
    // sandbox. Not in chroot mode: a descriptor of a directory outside the chroot would
    // be a way out of it; the file stays and a later daemon replaces it.
    if case .socketPath(let path, _) = endpoint, options.sandbox != .chroot {
        sandbox.socketFile = SocketFile(path: path)
    }
    let isolated: SandboxResult
    do {
        let limit = try Sandboxing.raiseFileLimit(sandbox, logger: logger)
        logger.debug("RLIMIT_NOFILE is \(limit)")
        isolated = try Sandboxing.enter(sandbox, logger: logger)
        try Sandboxing.dropCapabilities(sandbox, logger: logger)
    } catch {
        fail("\(error)")
    }
    let shutdownFD: Int32
    let usr1FD: Int32
    do {
        shutdownFD = try Signals.blockShutdownSignals()
        usr1FD = try Signals.signalfd(signalSet([SIGUSR1]))
    } catch { fail("blocking SIGTERM/SIGINT/SIGHUP: \(error)") }

    // ---- the filesystem ----
    let filesystem = openFileSystem(options, sharedPath: sharedPath, root: isolated.root,
                                    procSelfFD: isolated.procSelfFD, logger: logger)
    do { try Sandboxing.installSeccomp(sandbox, logger: logger) } catch { fail("\(error)") }

    let server = Server(filesystem: filesystem, options: ServerOptions(), logger: logger)
    let queues = QueueCounters()
    var configuration = BackendConfiguration(numRequestQueues: options.numRequestQueues)
    configuration.threadPoolSize = options.threadPoolSize
    let backend = VhostUserBackend(configuration: configuration, handler: FUSEQueueHandler(server: server, queues: queues),
                                   logger: logger)
    backend.deviceState = MigrationStateHandler(server: server)
    let reporter: StatisticsReporter
    let reporterThread: pthread_t
    do {
        reporter = try StatisticsReporter(listenFD: statsFD, usr1FD: usr1FD, logger: logger) {
            statisticsText(server.statistics.snapshot(), queues: queues, open: filesystem.openCounts)
        }
        reporterThread = try reporter.start()
    } catch { fail("starting the statistics thread: \(error)") }

    // ---- one frontend, then exit ----
    // Start-up touched megabytes of code that will not run again; the serving path
    // brings back the pages it uses.
    Sandboxing.releaseCodePages(codeMappings)
    let status = serveOneFrontend(backend, listenFD: listenFD, shutdownFD: shutdownFD,
                                  requestQueues: options.numRequestQueues, logger: logger)
    reporter.stop(reporterThread)
    reporter.dump("at exit")
    filesystem.destroy()
    if options.sandbox == .none { sandbox.socketFile?.remove() }
    return status
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
            logger.info("stopped by \(stopSignalName(shutdownFD)) before a frontend connected; exiting")
            return nil
        }
        let (_, shutdown) = try Sys.pollPair(candidate, shutdownFD)
        if shutdown != 0 {
            Sys.close(candidate)
            logger.info("stopped by \(stopSignalName(shutdownFD)) before the frontend spoke; exiting")
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
func runHostMount(_ options: DaemonOptions, sandbox: SandboxConfiguration, mountpoint: String, logger: Logger) -> Int32 {
    logger.info("host FUSE mount at \(mountpoint); sandbox: \(options.sandbox.rawValue), seccomp: \(options.seccomp.rawValue), cache: \(options.cache.rawValue)")
    let mount: HostFUSEMount
    let isolated: SandboxResult
    do {
        let limit = try Sandboxing.raiseFileLimit(sandbox, logger: logger)
        logger.debug("RLIMIT_NOFILE is \(limit)")
        do {
            // No thread may exist yet: the sandbox forks. The mount makes none.
            mount = try HostFUSEMount(mountpoint: mountpoint, threads: max(2, options.threadPoolSize),
                                      unmountedOnExit: true, logger: logger)
        } catch {
            fail("--fuse-mount \(mountpoint): \(error)")
        }
        isolated = try Sandboxing.enter(sandbox, logger: logger)
        try Sandboxing.dropCapabilities(sandbox, logger: logger)
    } catch {
        fail("\(error)")
    }
    let shutdownFD: Int32
    do { shutdownFD = try Signals.blockShutdownSignals() } catch { fail("blocking SIGTERM/SIGINT: \(error)") }
    let filesystem = openFileSystem(options, sharedPath: sandbox.sharedDirectory, root: isolated.root,
                                    procSelfFD: isolated.procSelfFD, logger: logger)
    do { try Sandboxing.installSeccomp(sandbox, logger: logger) } catch { fail("\(error)") }
    let server = Server(filesystem: filesystem, options: ServerOptions(), logger: logger)
    let session = HostFUSESession(mount: mount, server: server, logger: logger)
    session.run(shutdownFD: shutdownFD)
    filesystem.destroy()
    return 0
}

/// The passthrough backend over `root` (the shared directory as this process sees it);
/// one that cannot be opened ends the start-up with an error naming `sharedPath`.
func openFileSystem(_ options: DaemonOptions, sharedPath: String, root: String, procSelfFD: Int32?,
                    logger: Logger) -> PassthroughFileSystem {
    var configuration = PassthroughConfiguration(root: root, procSelfFD: procSelfFD)
    configuration.options = options.fileSystem
    do {
        return try PassthroughFileSystem(configuration: configuration, logger: logger)
    } catch {
        fail("opening the shared directory \(sharedPath): \(error)")
    }
}
