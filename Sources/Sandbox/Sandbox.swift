#if canImport(Glibc)
import Glibc
#endif
import CVirtioFS
import Options
import Posix
import Synchronization

/// Isolation of the serving process. `main` calls, in order and before any thread
/// exists: `raiseFileLimit`, `enter`, `dropCapabilities`, `installSeccomp`.
public enum Sandboxing {
    /// The default open-file limit is the system maximum, but never more than this.
    public static let defaultFileLimitCap: UInt64 = 1_000_000

    /// Enters the configured mode and returns what the serving process needs.
    ///
    /// namespace: unshares mount, pid and net namespaces (and a user namespace when not
    /// root or when id maps are given), then forks; the parent only waits, forwards
    /// SIGTERM/SIGINT, and exits with the child's status, so this returns only in the
    /// child, which is PID 1 of the new pid namespace and sees the shared directory as "/".
    /// chroot: opens /proc/self/fd, then chroot(2) into the share. none: nothing.
    public static func enter(_ c: SandboxConfiguration, logger: Logger) throws(SandboxError) -> SandboxResult {
        try checkSharedDirectory(c.sharedDirectory)
        switch c.mode {
        case .none:
            logger.warning("sandbox disabled (--sandbox=none): the daemon can reach the whole host file system")
            return SandboxResult(root: c.sharedDirectory, procSelfFD: try? openProcSelfFD())
        case .chroot:
            return try enterChroot(c, logger: logger)
        case .namespace:
            return try enterNamespaces(c, logger: logger)
        }
    }

    static func checkSharedDirectory(_ path: String) throws(SandboxError) {
        guard path.hasPrefix("/") else { throw .sharedDirectoryNotAbsolute(path) }
        let st: stat
        do { st = try Sys.statPath(path) } catch { throw .sharedDirectory(path, error) }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw .sharedDirectoryNotADirectory(path) }
    }

    static func openProcSelfFD() throws(SandboxError) -> Int32 {
        do {
            return try Sys.openat(AT_FDCWD, "/proc/self/fd", CVFS_O_PATH | O_DIRECTORY)
        } catch {
            throw .openProcSelfFD(error)
        }
    }

    static func enterChroot(_ c: SandboxConfiguration, logger: Logger) throws(SandboxError) -> SandboxResult {
        guard geteuid() == 0 else { throw .chrootNeedsRoot }
        // /proc is out of view after chroot: keep a handle on it first.
        let procFD = try openProcSelfFD()
        do { try Sys.chroot(c.sharedDirectory) } catch {
            Sys.close(procFD)
            throw .chroot(c.sharedDirectory, error)
        }
        do { try Sys.chdir("/") } catch {
            Sys.close(procFD)
            throw .chdir("/", error)
        }
        logger.info("sandbox: chroot into \(c.sharedDirectory)")
        return SandboxResult(root: "/", procSelfFD: procFD)
    }

    static func enterNamespaces(_ c: SandboxConfiguration, logger: Logger) throws(SandboxError) -> SandboxResult {
        let uid = geteuid()
        let gid = getegid()
        let userNamespace = uid != 0 || !c.uidMap.isEmpty || !c.gidMap.isEmpty
        var flags = CVFS_CLONE_NEWNS | CVFS_CLONE_NEWPID | CVFS_CLONE_NEWNET
        if userNamespace { flags |= CVFS_CLONE_NEWUSER }
        if !userNamespace {
            do { try Sys.unshare(flags) } catch { throw .unshare(error) }
        } else {
            let uidMaps = c.uidMap.isEmpty ? [IDMap(inside: uid, outside: uid, count: 1)] : c.uidMap
            let gidMaps = c.gidMap.isEmpty ? [IDMap(inside: gid, outside: gid, count: 1)] : c.gidMap
            try checkIDMaps(uidMaps, kind: "uid")
            try checkIDMaps(gidMaps, kind: "gid")
            // The supplementary groups as host ids, read while they still are.
            let hostGroups = (try? Sys.getgroups()) ?? []
            let setgroupsAllowed: Bool
            if uid == 0 {
                try unshareWithMapsWrittenFromOutside(flags, uidMaps: uidMaps, gidMaps: gidMaps, writer: .procFiles)
                setgroupsAllowed = true
            } else if isOwnIDOnly(uidMaps, own: uid) && isOwnIDOnly(gidMaps, own: gid) {
                do { try Sys.unshare(flags) } catch { throw .unshare(error) }
                // Unprivileged, the kernel accepts only our own id mapped, written by
                // ourselves, and a gid_map only after setgroups is denied.
                try writeProcFile("/proc/self/setgroups", "deny\n")
                try writeProcFile("/proc/self/uid_map", idMapFileText(uidMaps))
                try writeProcFile("/proc/self/gid_map", idMapFileText(gidMaps))
                setgroupsAllowed = false
            } else {
                // Other ranges need the setuid helpers, which check them against
                // /etc/subuid and /etc/subgid.
                let tools = MapWriter.setuidTools(newuidmap: try findTool("newuidmap"), newgidmap: try findTool("newgidmap"))
                try unshareWithMapsWrittenFromOutside(flags, uidMaps: uidMaps, gidMaps: gidMaps, writer: tools)
                setgroupsAllowed = readSetgroupsAllowed()
            }
            try takeNamespaceIdentity(uid: uid, gid: gid, hostGroups: hostGroups, uidMaps: uidMaps, gidMaps: gidMaps,
                                      setgroupsAllowed: setgroupsAllowed, logger: logger)
        }

        // Read before the fork: the child soon mounts its own /proc and pivots the root
        // this mount namespace shares, after which the parent cannot read its own map.
        let code = codeMappings()
        let pid: pid_t
        do { pid = try Sys.fork() } catch { throw .fork(error) }
        if pid > 0 { waitForChildAndExit(pid, code: code, socketFile: c.socketFile) }
        c.socketFile?.close()

        // The serving process, PID 1 of the new pid namespace. The kernel delivers to a
        // namespace's init only the signals it has a handler for, so SIGTERM/SIGINT/SIGHUP
        // (forwarded by the parent, or the parent-death signal) would be ignored without
        // one. These end the process; the daemon may replace them for a graceful stop.
        handleTerminationSignals { sig in _exit(128 + sig) }
        // If the waiting parent is killed, do not live on unsupervised.
        _ = try? Sys.prctl(CVFS_PR_SET_PDEATHSIG, UInt(SIGTERM))

        // Mounts made below must not propagate back to the host; host mounts may still
        // propagate in (slave), e.g. media mounted later under the share.
        do { try Sys.mount(source: nil, target: "/", type: nil, flags: CVFS_MS_REC | CVFS_MS_SLAVE) } catch {
            throw .mountPrivate(error)
        }
        // A /proc for this pid namespace, so /proc/self is this process.
        do {
            try Sys.mount(source: "proc", target: "/proc", type: "proc",
                          flags: CVFS_MS_NOSUID | CVFS_MS_NODEV | CVFS_MS_NOEXEC | CVFS_MS_RELATIME)
        } catch { throw .mountProc(error) }
        let procFD = try openProcSelfFD()

        let share = c.sharedDirectory
        do throws(SandboxError) {
            // pivot_root needs the new root to be a mount point.
            do { try Sys.mount(source: share, target: share, type: nil, flags: CVFS_MS_BIND | CVFS_MS_REC) } catch {
                throw SandboxError.bindMount(share, error)
            }
            do { try Sys.chdir(share) } catch { throw SandboxError.chdir(share, error) }
            // pivot_root(".", ".") stacks the old root on top of the new one; detaching
            // "." then removes the old root from view without needing a directory for it.
            do { try Sys.pivotRoot(newRoot: ".", putOld: ".") } catch { throw SandboxError.pivotRoot(share, error) }
            do { try Sys.umount2(".", flags: CVFS_MNT_DETACH) } catch { throw SandboxError.unmountOldRoot(error) }
            do { try Sys.chdir("/") } catch { throw SandboxError.chdir("/", error) }
        } catch {
            Sys.close(procFD)
            throw error
        }
        logger.info("sandbox: namespaces entered, \(share) is now /")
        return SandboxResult(root: "/", procSelfFD: procFD)
    }

    /// Who writes the maps of a new user namespace from outside it.
    enum MapWriter {
        /// We do, as root (CAP_SETUID/CAP_SETGID in the parent namespace): any ranges.
        case procFiles
        /// The setuid newuidmap/newgidmap (Debian's uidmap package), for an unprivileged
        /// user's subordinate ranges.
        case setuidTools(newuidmap: String, newgidmap: String)
    }

    /// Exit statuses of the map-writing helper besides an errno of a failed write.
    static let newuidmapFailed: Int32 = 200
    static let newgidmapFailed: Int32 = 201

    /// A process inside the new user namespace may only map its own id, so a helper forked
    /// beforehand, still outside, has our maps written (by itself as root, or through
    /// newuidmap/newgidmap) once we have unshared; setgroups stays usable as root.
    static func unshareWithMapsWrittenFromOutside(_ flags: Int32, uidMaps: [IDMap], gidMaps: [IDMap],
                                                  writer: MapWriter) throws(SandboxError) {
        let target = Sys.processID
        let go: (read: Int32, write: Int32)
        do { go = try Sys.pipe() } catch { throw .fork(error) }
        let helper: pid_t
        do { helper = try Sys.fork() } catch {
            Sys.close(go.read); Sys.close(go.write)
            throw .fork(error)
        }
        if helper == 0 {
            Sys.close(go.write)
            var byte: UInt8 = 0
            let got = withUnsafeMutableBytes(of: &byte) { (try? Sys.read(go.read, $0)) ?? 0 }
            // EOF instead of a byte: the parent gave up; write nothing.
            guard got == 1 else { _exit(0) }
            writeMapsAndExit(target: target, uidMaps: uidMaps, gidMaps: gidMaps, writer: writer)
        }
        Sys.close(go.read)
        do { try Sys.unshare(flags) } catch {
            Sys.close(go.write)
            _ = try? Sys.waitpid(helper)
            throw .unshare(error)
        }
        let byte: UInt8 = 1
        _ = withUnsafeBytes(of: byte) { try? Sys.write(go.write, $0) }
        Sys.close(go.write)
        let status: Int32
        do { status = try Sys.waitpid(helper).status } catch { throw .fork(error) }
        guard status != 0 else { return }
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : Errno.ioError.rawValue
        switch (code, writer) {
        case (newuidmapFailed, .setuidTools(let tool, _)):
            throw .idMapTool(tool, toolArguments(target, uidMaps))
        case (newgidmapFailed, .setuidTools(_, let tool)):
            throw .idMapTool(tool, toolArguments(target, gidMaps))
        default:
            // The helper exits with the errno of a failed write.
            throw .writeIDMap("/proc/\(target)/uid_map or gid_map", Errno(code))
        }
    }

    /// The helper's work: write both maps of `target`, then exit 0, or with the errno of
    /// a failed write, or with `newuidmapFailed`/`newgidmapFailed`.
    static func writeMapsAndExit(target: pid_t, uidMaps: [IDMap], gidMaps: [IDMap], writer: MapWriter) -> Never {
        switch writer {
        case .procFiles:
            for (file, maps) in [("uid_map", uidMaps), ("gid_map", gidMaps)] {
                do { try writeProcFile("/proc/\(target)/\(file)", idMapFileText(maps)) } catch {
                    if case .writeIDMap(_, let e) = error { _exit(e.rawValue & 0xff) }
                    _exit(Errno.ioError.rawValue)
                }
            }
        case .setuidTools(let newuidmap, let newgidmap):
            for (tool, maps, failure) in [(newuidmap, uidMaps, newuidmapFailed), (newgidmap, gidMaps, newgidmapFailed)] {
                // The tool prints why it refused on our stderr.
                guard let pid = try? Sys.spawnInheritingOutput(tool, arguments: toolArguments(target, maps)),
                      let waited = try? Sys.waitpid(pid), waited.status == 0 else { _exit(failure) }
            }
        }
        _exit(0)
    }

    /// newuidmap/newgidmap arguments: the pid, then inside, outside, count per range.
    static func toolArguments(_ target: pid_t, _ maps: [IDMap]) -> [String] {
        ["\(target)"] + maps.flatMap { ["\($0.inside)", "\($0.outside)", "\($0.count)"] }
    }

    /// The first executable `name` on $PATH, else in the usual system directories.
    static func findTool(_ name: String) throws(SandboxError) -> String {
        var directories: [String] = []
        if let path = getenv("PATH") {
            directories = String(cString: path).split(separator: ":").map(String.init)
        }
        directories += ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        for directory in directories where directory.hasPrefix("/") {
            let candidate = directory + "/" + name
            if (try? Sys.faccessat(AT_FDCWD, candidate, X_OK, flags: 0)) != nil { return candidate }
        }
        throw .idMapToolMissing(name)
    }

    /// Whether /proc/self/setgroups says "allow" (newgidmap may have denied it).
    static func readSetgroupsAllowed() -> Bool {
        guard let fd = try? Sys.openat(AT_FDCWD, "/proc/self/setgroups", O_RDONLY) else { return false }
        defer { Sys.close(fd) }
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = buffer.withUnsafeMutableBytes { b in (try? Sys.read(fd, b)) ?? 0 }
        return buffer.prefix(n).starts(with: Array("allow".utf8))
    }

    /// After the maps are written: a process whose own host id is not in the map runs as
    /// the overflow id (65534), which it can switch away from but never back to, so every
    /// per-request credential change would fail to restore. Such a process (root given
    /// libvirt's `<idmap>`, for one) becomes the namespace's root, or the lowest mapped
    /// id when 0 is not mapped. Supplementary groups the map does not cover are dropped
    /// for the same reason, when setgroups is allowed.
    static func takeNamespaceIdentity(uid: uid_t, gid: gid_t, hostGroups: [gid_t], uidMaps: [IDMap], gidMaps: [IDMap],
                                      setgroupsAllowed: Bool, logger: Logger) throws(SandboxError) {
        func fallback(_ maps: [IDMap]) -> UInt32? {
            maps.contains { $0.containsInside(0) } ? 0 : maps.map(\.inside).min()
        }
        let insideGID = insideID(of: gid, in: gidMaps) ?? fallback(gidMaps)
        let insideUID = insideID(of: uid, in: uidMaps) ?? fallback(uidMaps)
        guard let insideUID, let insideGID else { throw .identity("the maps are empty", .invalidArgument) }
        if setgroupsAllowed {
            let groups = hostGroups.compactMap { insideID(of: $0, in: gidMaps) }
            if groups.count != hostGroups.count {
                logger.info("user namespace: dropping \(hostGroups.count - groups.count) supplementary group(s) the gid map does not cover")
            }
            do { try Sys.threadSetgroups(groups) } catch { throw .identity("setgroups", error) }
        }
        if insideID(of: gid, in: gidMaps) == nil {
            do { try Sys.threadSetresgid(insideGID, insideGID, insideGID) } catch { throw .identity("setresgid(\(insideGID))", error) }
        }
        if insideID(of: uid, in: uidMaps) == nil {
            do { try Sys.threadSetresuid(insideUID, insideUID, insideUID) } catch { throw .identity("setresuid(\(insideUID))", error) }
        }
        logger.info("user namespace: uid map \(uidMaps.map(\.description).joined(separator: " ")), gid map \(gidMaps.map(\.description).joined(separator: " ")); serving as namespace uid \(insideUID) gid \(insideGID)")
    }

    static func writeProcFile(_ path: String, _ text: String) throws(SandboxError) {
        do throws(Errno) {
            let fd = try Sys.openat(AT_FDCWD, path, O_WRONLY)
            defer { Sys.close(fd) }
            let bytes = Array(text.utf8)
            // withUnsafeBytes rethrows untyped errors; carry the Errno out by hand.
            let failure = bytes.withUnsafeBytes { buffer -> Errno? in
                do throws(Errno) { try Sys.writeAll(fd, buffer); return nil } catch { return error }
            }
            if let failure { throw failure }
        } catch {
            throw .writeIDMap(path, error)
        }
    }

    /// The parent side of namespace mode: wait for the serving child, forward the
    /// termination signals, and leave with the child's status.
    static func waitForChildAndExit(_ child: pid_t, code: [UnsafeMutableRawBufferPointer], socketFile: SocketFile? = nil) -> Never {
        forwardedSignalTarget.store(child, ordering: .relaxed)
        // Waiting and signalling our own child need no privilege: give it all up.
        dropAllCapabilities()
        handleTerminationSignals { sig in
            _ = kill(forwardedSignalTarget.load(ordering: .relaxed), sig)
        }
        // SIGUSR1 (dump the statistics) is passed on too: the operator signals the pid they started.
        var passOn = sigaction()
        passOn.__sigaction_handler.sa_handler = { sig in _ = kill(forwardedSignalTarget.load(ordering: .relaxed), sig) }
        sigemptyset(&passOn.sa_mask)
        _ = sigaction(SIGUSR1, &passOn, nil)
        // The daemon blocks these from its start so that none is lost or fatal before it
        // can handle them; here they must reach the handlers (one may already be pending),
        // whoever blocked them: the mask is inherited.
        var forwarded = sigset_t()
        sigemptyset(&forwarded)
        for sig in terminationSignals + [SIGUSR1] { sigaddset(&forwarded, sig) }
        sigprocmask(SIG_UNBLOCK, &forwarded, nil)
        // The fork left this process every code page the start-up touched (about 5 MB
        // of the binary and libc) though from here it only waits: give them back, last,
        // so that only the wait loop's pages come back.
        releaseCodePages(code)
        while true {
            let status: Int32
            do {
                status = try Sys.waitpid(child).status
            } catch {
                // ECHILD cannot happen for our own child; leave rather than spin.
                _exit(1)
            }
            let termSignal = status & 0x7f
            // The child has ended (not merely stopped): nobody listens on the socket any more.
            if termSignal != 0x7f { socketFile?.remove() }
            if termSignal == 0 {
                _exit((status >> 8) & 0xff)
            }
            if termSignal != 0x7f {
                // Die the same way, so supervisors see the real cause.
                signal(termSignal, SIG_DFL)
                var unblock = sigset_t()
                sigemptyset(&unblock)
                sigaddset(&unblock, termSignal)
                sigprocmask(SIG_UNBLOCK, &unblock, nil)
                raise(termSignal)
                _exit(128 + termSignal)
            }
        }
    }

    /// The read-only mappings of program files (code and read-only data) that hold no
    /// page of their own, from /proc/self/smaps: every resident page of such a mapping is
    /// a clean copy of the file, so dropping it loses nothing. Mappings with anonymous
    /// pages (RELRO: relocations written at load, then made read-only) and writable ones
    /// are left out. Read them before the sandbox hides /proc. Empty when unreadable.
    public static func codeMappings() -> [UnsafeMutableRawBufferPointer] {
        guard let fd = try? Sys.openat(AT_FDCWD, "/proc/self/smaps", O_RDONLY | O_CLOEXEC) else { return [] }
        defer { Sys.close(fd) }
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { (raw) -> Int in (try? Sys.read(fd, raw)) ?? 0 }
            if n <= 0 { break }
            text += chunk[0..<n]
        }
        var mappings: [UnsafeMutableRawBufferPointer] = []
        // A mapping's block: "start-end perms offset dev inode path", then "Key: value" lines.
        var candidate: UnsafeMutableRawBufferPointer?
        for line in text.split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first.last == UInt8(ascii: ":") {
                if first.elementsEqual("Anonymous:".utf8), let mapping = candidate {
                    if fields.count >= 2, fields[1].elementsEqual("0".utf8) { mappings.append(mapping) }
                    candidate = nil
                }
                continue
            }
            candidate = nil
            guard fields.count >= 6, fields[1].elementsEqual("r-xp".utf8) || fields[1].elementsEqual("r--p".utf8),
                  fields[5].first == UInt8(ascii: "/") else { continue }
            let range = first.split(separator: UInt8(ascii: "-"))
            guard range.count == 2, let start = UInt(String(decoding: range[0], as: UTF8.self), radix: 16),
                  let end = UInt(String(decoding: range[1], as: UTF8.self), radix: 16), end > start,
                  let address = UnsafeMutableRawPointer(bitPattern: start) else { continue }
            candidate = UnsafeMutableRawBufferPointer(start: address, count: Int(end - start))
        }
        return mappings
    }

    /// Drops this process's resident pages of `mappings` (from `codeMappings`): start-up
    /// code (option parsing, sandbox set-up) stops counting against the process, and
    /// what runs later comes back from the page cache on first use. Best effort.
    public static func releaseCodePages(_ mappings: [UnsafeMutableRawBufferPointer]) {
        for mapping in mappings {
            guard let base = mapping.baseAddress else { continue }
            try? Sys.dropPages(base, length: mapping.count)
        }
    }

    /// The signals that stop the daemon: the namespace parent forwards them, the serving
    /// child (a pid namespace's init) needs a handler for each or never sees them.
    static let terminationSignals = [SIGTERM, SIGINT, SIGHUP]

    /// Installs `handler` for every one of `terminationSignals`.
    static func handleTerminationSignals(_ handler: @convention(c) (Int32) -> Void) {
        for sig in terminationSignals {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = handler
            sigemptyset(&action.sa_mask)
            _ = sigaction(sig, &action, nil)
        }
    }

    /// Raises RLIMIT_NOFILE: to `rlimitNofile`, or to the system maximum (fs.nr_open,
    /// capped at `defaultFileLimitCap`); an `rlimitNofile` of 0 leaves the limit as it is.
    /// Without CAP_SYS_RESOURCE the hard limit stops us: the default then settles for the
    /// hard limit with a warning, while an explicit value above it is an error. Returns
    /// the soft limit now in force.
    public static func raiseFileLimit(_ c: SandboxConfiguration, logger: Logger) throws(SandboxError) -> UInt64 {
        let current: rlimit
        do { current = try Sys.getrlimit(Int32(RLIMIT_NOFILE.rawValue)) } catch { throw .readFileLimit(error) }
        let soft = UInt64(current.rlim_cur)
        let hard = UInt64(current.rlim_max)
        let target: UInt64
        if let requested = c.rlimitNofile {
            // A limit of 0 would leave the daemon unable to open anything: 0 means "keep".
            if requested == 0 {
                logger.debug("open-file limit left at \(soft)")
                return soft
            }
            target = requested
        } else {
            target = min(readSystemFileMax() ?? defaultFileLimitCap, defaultFileLimitCap)
            if soft >= target {
                logger.debug("open-file limit already \(soft)")
                return soft
            }
        }
        do {
            try Sys.setrlimit(Int32(RLIMIT_NOFILE.rawValue),
                              rlimit(rlim_cur: rlim_t(target), rlim_max: rlim_t(max(target, hard))))
            logger.info("open-file limit set to \(target)")
            return target
        } catch {
            if c.rlimitNofile != nil { throw .raiseFileLimit(requested: target, hardLimit: hard, error) }
            if soft < hard {
                do {
                    try Sys.setrlimit(Int32(RLIMIT_NOFILE.rawValue), rlimit(rlim_cur: rlim_t(hard), rlim_max: rlim_t(hard)))
                } catch let second {
                    throw .raiseFileLimit(requested: hard, hardLimit: hard, second)
                }
            }
            let obtained = max(soft, hard)
            logger.warning("open-file limit raised only to \(obtained), not \(target): \(error) "
                           + "(the hard limit needs CAP_SYS_RESOURCE to go higher); large trees may run out of descriptors")
            return obtained
        }
    }

    /// fs.nr_open, the most any process may have open; nil when unreadable.
    static func readSystemFileMax() -> UInt64? {
        guard let fd = try? Sys.openat(AT_FDCWD, "/proc/sys/fs/nr_open", O_RDONLY) else { return nil }
        defer { Sys.close(fd) }
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { b in (try? Sys.read(fd, b)) ?? 0 }
        // The number ends at the newline.
        return decimalValue(buffer.prefix(n).prefix(while: isASCIIDigit))
    }
}

/// The child the namespace parent forwards signals to (read by the signal handler).
private let forwardedSignalTarget = Atomic<pid_t>(0)
