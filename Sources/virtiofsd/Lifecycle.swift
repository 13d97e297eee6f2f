#if canImport(Glibc)
import Glibc
#endif
import Options
import Posix
import VhostUser

// How the daemon starts talking and how it ends: its logger, going to the background,
// serving the one frontend, and saying why it stopped.

/// The logger the options ask for. In syslog, lines are named "virtiofsd[PID]" (or
/// "virtiofsd-TAG[PID]") with the host pid the daemon was started as: the serving
/// process is PID 1 of its own pid namespace. On stderr the label carries the tag.
func makeLogger(_ options: DaemonOptions) -> Logger {
    let label = options.tag.map { "virtiofsd \($0)" } ?? "virtiofsd"
    if options.syslog && Logger.syslogSocketMissing() {
        printError("virtiofsd: --syslog: no syslog socket at /dev/log, so log lines are lost; "
                   + "start a syslog daemon (or systemd-journald), or log to stderr without --syslog")
    }
    let logger = Logger(label: label, level: options.logLevel,
                        destination: options.syslog ? .syslog : .standardError,
                        syslogIdent: syslogIdent(tag: options.tag, pid: getpid()))
    fatalLogger.withLock { $0 = logger }
    return logger
}

/// "virtiofsd[1234]", or "virtiofsd-myfs[1234]" with a tag (bytes other than letters,
/// digits, '.', '_' and '-' become '_', so syslog parsers see one word).
func syslogIdent(tag: String?, pid: pid_t) -> String {
    var name = "virtiofsd"
    if let tag, !tag.isEmpty {
        name += "-" + String(decoding: tag.utf8.map { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || b == 0x2E || b == 0x5F || b == 0x2D ? b : 0x5F
        }, as: UTF8.self)
    }
    return name + "[\(pid)]"
}

/// `--daemonize`: once the socket listens, the process that was started exits 0 and a
/// child in a new session carries on, as the C daemon does. Standard input and output
/// go to /dev/null; standard error stays where it was (the log, without --syslog).
func daemonize(tag: String?, logger: Logger) {
    let pid: pid_t
    do { pid = try Sys.fork() } catch { fail("--daemonize: fork: \(error)") }
    if pid > 0 { _exit(0) }
    _ = setsid()
    let null = open("/dev/null", O_RDWR | O_CLOEXEC)
    if null >= 0 {
        _ = dup2(null, 0)
        _ = dup2(null, 1)
        if null > 1 { close(null) }
    }
    logger.renameSyslogIdent(syslogIdent(tag: tag, pid: getpid()))
    logger.info("in the background as pid \(getpid())")
}

/// A signal set of `signals`.
func signalSet(_ signals: [Int32]) -> sigset_t {
    var set = sigset_t()
    sigemptyset(&set)
    for sig in signals { sigaddset(&set, sig) }
    return set
}

/// The name of the stop signal waiting on `shutdownFD` (a signalfd), read off it.
func stopSignalName(_ shutdownFD: Int32) -> String {
    guard let signal = try? Signals.readSignal(shutdownFD) else { return "a signal" }
    return Signals.name(signal)
}

/// Accepts the frontend and serves it; returns the exit status, having logged why it
/// ended: a stop signal (0), the frontend closing the connection (0), or the frontend
/// sending something refused (1, with what to do about it when we know).
func serveOneFrontend<H>(_ backend: VhostUserBackend<H>, listenFD: Int32, shutdownFD: Int32,
                         requestQueues: Int, logger: Logger) -> Int32 {
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
    let end: VhostUserBackend<H>.End
    do {
        end = try backend.serve(connection: connection, shutdownFD: shutdownFD)
    } catch {
        logger.error("\(error)")
        return 1
    }
    switch end {
    case .shutdownRequested:
        logger.info("stopped by \(stopSignalName(shutdownFD)); exiting")
        return 0
    case .frontendDisconnected:
        logger.info("the frontend closed the connection (the guest was shut down or QEMU exited); exiting")
        return 0
    case .frontendError(let error):
        if let hint = advice(for: error, requestQueues: requestQueues) { logger.error(hint) }
        logger.error("the frontend's request was refused; exiting with status 1")
        return 1
    }
}

/// What an operator can do about a frontend error, when it is one we understand.
func advice(for error: VhostUserError, requestQueues: Int) -> String? {
    guard case .queueIndexOutOfRange(_, let index, _) = error, Int(index) > requestQueues else { return nil }
    // Queue 0 is hiprio; queue i is request queue i.
    return "the frontend uses more request queues than offered (\(requestQueues)): it addressed request queue \(index); "
        + "start the daemon with --num-request-queues=N (up to 16) to match QEMU's num-request-queues, "
        + "or lower num-request-queues in QEMU"
}
