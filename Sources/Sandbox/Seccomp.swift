import CSeccomp
import CVirtioFS
import Options
import Posix

/// The CPU architectures the allow-list is written for.
public struct SyscallArchitectures: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let x86_64 = SyscallArchitectures(rawValue: 1)
    public static let aarch64 = SyscallArchitectures(rawValue: 2)
    public static let all: SyscallArchitectures = [.x86_64, .aarch64]

    /// The architecture this binary runs on.
    public static var native: SyscallArchitectures {
        #if arch(x86_64)
        return .x86_64
        #elseif arch(arm64)
        return .aarch64
        #else
        return []
        #endif
    }
}

/// One allowed system call and why the daemon makes it.
public struct SyscallRule: Sendable {
    public let name: String
    public let reason: String
    public let architectures: SyscallArchitectures

    init(_ name: String, _ reason: String, _ architectures: SyscallArchitectures = .all) {
        self.name = name
        self.reason = reason
        self.architectures = architectures
    }
}

extension Sandboxing {
    /// Every system call the serving process makes after the filter is loaded.
    /// Names the running libseccomp does not know (newer calls) are skipped at load time.
    public static let seccompAllowList: [SyscallRule] = [
        // Memory: the allocator, thread stacks, and the guest memory regions.
        SyscallRule("brk", "malloc grows the heap"),
        SyscallRule("mmap", "malloc, thread stacks, mapping guest memory regions and the dirty-page log, and the SIGBUS guard mapping zero pages over guest memory whose file shrank"),
        SyscallRule("munmap", "free, thread exit, and unmapping guest memory on SET_MEM_TABLE and an old dirty log"),
        SyscallRule("mprotect", "guard pages of new thread stacks"),
        SyscallRule("madvise", "malloc returns memory; thread stacks are released on exit"),
        SyscallRule("mremap", "realloc of large blocks"),
        SyscallRule("membarrier", "process-wide barriers some runtimes issue"),

        // Threads and the Swift runtime.
        SyscallRule("futex", "locks, condition variables and thread joins"),
        SyscallRule("clone", "pthread_create on older glibc"),
        SyscallRule("clone3", "pthread_create"),
        SyscallRule("set_robust_list", "set up by glibc in every new thread"),
        SyscallRule("rseq", "glibc registers restartable sequences in every new thread"),
        SyscallRule("sched_yield", "queue threads leave the CPU while they watch the ring; spin locks back off"),
        SyscallRule("sched_getaffinity", "sizing the thread pool by available CPUs"),
        SyscallRule("exit", "a thread ends"),
        SyscallRule("exit_group", "the process ends"),
        SyscallRule("gettid", "per-thread credential bookkeeping and logging"),
        SyscallRule("getpid", "logging and abort()"),
        SyscallRule("tgkill", "abort(), and pthread_kill waking a lock wait that is cancelled"),
        SyscallRule("tkill", "pthread_kill on older C libraries"),
        SyscallRule("getrandom", "hash seeds and random numbers"),
        SyscallRule("prlimit64", "reading RLIMIT_NOFILE for the file descriptor budget"),
        SyscallRule("prctl", "naming threads (PR_SET_NAME)"),
        SyscallRule("restart_syscall", "the kernel resumes an interrupted sleep with it"),

        // Signals.
        SyscallRule("rt_sigaction", "installing the SIGBUS guard over guest memory on the first memory table (and restoring the previous action for a SIGBUS elsewhere), and the lock waiters' wake-up signal at the first wait"),
        SyscallRule("rt_sigprocmask", "blocking signals in worker threads"),
        SyscallRule("rt_sigreturn", "returning from a signal handler: the SIGBUS guard after it repaired a guest memory fault"),
        SyscallRule("sigaltstack", "the runtime's crash-handler stack for new threads"),
        SyscallRule("signalfd4", "waiting for SIGTERM/SIGINT in the event loop"),

        // Time.
        SyscallRule("clock_gettime", "timestamps when the vDSO falls back to the kernel"),
        SyscallRule("gettimeofday", "timestamps when the vDSO falls back to the kernel"),
        SyscallRule("time", "time(2) in static builds", .x86_64),
        SyscallRule("clock_nanosleep", "sleeping"),
        SyscallRule("nanosleep", "sleeping"),

        // Identity and per-request credentials.
        SyscallRule("getuid", "reading ids"),
        SyscallRule("geteuid", "reading ids"),
        SyscallRule("getgid", "reading ids"),
        SyscallRule("getegid", "reading ids"),
        SyscallRule("setresuid", "per-thread switch to the caller's uid for creation requests"),
        SyscallRule("setresgid", "per-thread switch to the caller's gid for creation requests"),
        SyscallRule("setgroups", "per-thread supplementary groups for creation requests"),
        SyscallRule("setfsuid", "per-thread filesystem uid"),
        SyscallRule("setfsgid", "per-thread filesystem gid"),
        SyscallRule("capget", "reading CAP_FSETID before dropping it for killpriv"),
        SyscallRule("capset", "dropping CAP_FSETID per request for killpriv"),
        SyscallRule("umask", "per-thread umask for creation requests"),
        SyscallRule("unshare", "CLONE_FS so a thread's umask is its own"),

        // vhost-user: the socket, eventfds, and the event loop.
        SyscallRule("accept4", "accepting the frontend's connection"),
        SyscallRule("accept", "accepting the frontend's connection"),
        SyscallRule("recvmsg", "vhost-user messages with file descriptors"),
        SyscallRule("sendmsg", "vhost-user replies"),
        SyscallRule("read", "messages, eventfd kicks, receiving the migration state from its pipe"),
        SyscallRule("write", "eventfd calls, log lines, the SIGBUS guard reporting a fault on its eventfd, sending the migration state into its pipe"),
        SyscallRule("readv", "vectored reads"),
        SyscallRule("writev", "vectored writes (stdio)"),
        SyscallRule("close", "closing descriptors"),
        SyscallRule("dup", "duplicating descriptors"),
        SyscallRule("dup3", "duplicating descriptors"),
        SyscallRule("fcntl", "descriptor flags (F_GETFL of open files for migration) and POSIX/OFD locks"),
        SyscallRule("eventfd2", "each queue thread's stop eventfd and the guest memory fault eventfd"),
        SyscallRule("poll", "the message loop waits on the socket, the shutdown signalfd and the guest memory fault eventfd; queue threads on their kick and stop eventfds; /dev/fuse workers on their channel and stop eventfd", .x86_64),
        SyscallRule("ppoll", "poll(3) as glibc implements it where there is no poll system call (aarch64)"),
        SyscallRule("ioctl", "isatty (TCGETS) from C stdio when a stream is first used; the /dev/fuse transport clones its channels (FUSE_DEV_IOC_CLONE) before the filter"),

        // The passthrough backend.
        SyscallRule("openat", "opening inodes relative to held O_PATH descriptors"),
        SyscallRule("openat2", "opening with RESOLVE_BENEATH/NO_MAGICLINKS"),
        SyscallRule("open", "open(2) in older C libraries", .x86_64),
        SyscallRule("open_by_handle_at", "reopening inodes held as file handles; restoring inodes in --migration-mode=file-handles"),
        SyscallRule("name_to_handle_at", "holding inodes as file handles; saving them in --migration-mode=file-handles"),
        SyscallRule("newfstatat", "LOOKUP/GETATTR"),
        SyscallRule("fstat", "GETATTR on open files"),
        SyscallRule("statx", "inode identity with the mount id"),
        SyscallRule("statfs", "STATFS"),
        SyscallRule("fstatfs", "STATFS"),
        SyscallRule("getdents64", "READDIR"),
        SyscallRule("getdents", "READDIR (older C libraries)", .x86_64),
        SyscallRule("lseek", "READDIR offsets, LSEEK SEEK_DATA/SEEK_HOLE"),
        SyscallRule("pread64", "READ"),
        SyscallRule("pwrite64", "WRITE"),
        SyscallRule("preadv", "READ into guest buffers"),
        SyscallRule("pwritev", "WRITE from guest buffers"),
        SyscallRule("preadv2", "READ with flags"),
        SyscallRule("pwritev2", "WRITE with RWF_ flags (killpriv, O_APPEND)"),
        SyscallRule("fsync", "FSYNC"),
        SyscallRule("fdatasync", "FSYNC with datasync"),
        SyscallRule("syncfs", "SYNCFS"),
        SyscallRule("fallocate", "FALLOCATE"),
        SyscallRule("ftruncate", "SETATTR size"),
        SyscallRule("fchmod", "SETATTR mode"),
        SyscallRule("fchmodat", "SETATTR mode through /proc/self/fd"),
        SyscallRule("fchmodat2", "SETATTR mode with flags (newer C libraries)"),
        SyscallRule("fchown", "SETATTR uid/gid"),
        SyscallRule("fchownat", "SETATTR uid/gid on O_PATH descriptors"),
        SyscallRule("utimensat", "SETATTR times"),
        SyscallRule("linkat", "LINK"),
        SyscallRule("symlinkat", "SYMLINK"),
        SyscallRule("readlinkat", "READLINK; finding an inode's path in /proc/self/fd for --migration-mode=find-paths"),
        SyscallRule("mkdirat", "MKDIR"),
        SyscallRule("mknodat", "MKNOD and CREATE of special files"),
        SyscallRule("unlinkat", "UNLINK, RMDIR"),
        SyscallRule("renameat", "RENAME", .x86_64),
        SyscallRule("renameat2", "RENAME2 (exchange, noreplace, whiteout)"),
        SyscallRule("faccessat", "ACCESS"),
        SyscallRule("faccessat2", "ACCESS with flags"),
        SyscallRule("fchdir", "resolving through a directory descriptor"),
        SyscallRule("flock", "SETLK/SETLKW with FUSE_LK_FLOCK (a waiter thread blocks in it)"),
        SyscallRule("copy_file_range", "COPY_FILE_RANGE"),
        SyscallRule("fgetxattr", "GETXATTR on open files"),
        SyscallRule("fsetxattr", "SETXATTR on open files"),
        SyscallRule("flistxattr", "LISTXATTR on open files"),
        SyscallRule("fremovexattr", "REMOVEXATTR on open files"),
        SyscallRule("getxattr", "GETXATTR through /proc/self/fd"),
        SyscallRule("setxattr", "SETXATTR through /proc/self/fd"),
        SyscallRule("listxattr", "LISTXATTR through /proc/self/fd"),
        SyscallRule("removexattr", "REMOVEXATTR through /proc/self/fd"),
        SyscallRule("lgetxattr", "GETXATTR on symlinks"),
        SyscallRule("lsetxattr", "SETXATTR on symlinks"),
        SyscallRule("llistxattr", "LISTXATTR on symlinks"),
        SyscallRule("lremovexattr", "REMOVEXATTR on symlinks"),
    ]

    /// Allowed only with `--syslog`: syslog(3) (re)connects to /dev/log and sends datagrams.
    public static let seccompSyslogRules: [SyscallRule] = [
        SyscallRule("sendto", "syslog(3) sends each message"),
        SyscallRule("connect", "syslog(3) reconnects to /dev/log"),
        SyscallRule("socket", "syslog(3) reopens its socket after an error"),
    ]

    /// The rules for this configuration on this architecture.
    public static func seccompRules(syslog: Bool, architecture: SyscallArchitectures = .native) -> [SyscallRule] {
        let rules = syslog ? seccompAllowList + seccompSyslogRules : seccompAllowList
        return rules.filter { $0.architectures.contains(architecture) }
    }

    /// The native system call number libseccomp knows for `name`, or nil.
    public static func syscallNumber(_ name: String) -> Int32? {
        let number = seccomp_syscall_resolve_name(name)
        return number == __NR_SCMP_ERROR ? nil : number
    }

    /// Loads the allow-list filter. NO_NEW_PRIVS is set first (the kernel requires it of
    /// an unprivileged caller and it is right for root too). The filter covers every
    /// thread of the process, those already running included (TSYNC), and every thread
    /// created afterwards; `none` loads nothing.
    public static func installSeccomp(_ c: SandboxConfiguration, logger: Logger) throws(SandboxError) {
        let defaultAction: UInt32
        switch c.seccomp {
        case .none:
            logger.warning("seccomp filter disabled (--seccomp=none)")
            return
        case .kill: defaultAction = SCMP_ACT_KILL_PROCESS
        case .log: defaultAction = SCMP_ACT_LOG
        case .trap: defaultAction = SCMP_ACT_TRAP
        }
        do {
            try Sys.prctl(CVFS_PR_SET_NO_NEW_PRIVS, 1)
        } catch {
            throw .noNewPrivileges(error)
        }
        guard let ctx = seccomp_init(defaultAction) else { throw .seccompInit }
        defer { seccomp_release(ctx) }
        // Cover threads that already exist too, so no thread is left unfiltered.
        let tsync = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)
        guard tsync == 0 else { throw .seccompRule("thread synchronisation (TSYNC)", tsync) }
        var allowed = 0
        for rule in seccompRules(syslog: c.syslog) {
            guard let number = syscallNumber(rule.name) else {
                logger.debug("seccomp: \(rule.name) is unknown to this libseccomp, skipped")
                continue
            }
            let rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 0, nil)
            guard rc == 0 else { throw .seccompRule(rule.name, rc) }
            allowed += 1
        }
        let rc = seccomp_load(ctx)
        guard rc == 0 else { throw .seccompLoad(rc) }
        logger.debug("seccomp: \(allowed) system calls allowed, default action \(c.seccomp.rawValue)")
    }
}
