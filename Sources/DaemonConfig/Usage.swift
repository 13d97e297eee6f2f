/// `--version` output.
public let versionText = "virtiofsd (swift-virtiofsd) \(daemonVersion)\n"

/// `--print-capabilities` output, per the "Backend program conventions" of QEMU's
/// vhost-user.rst: the device type and the optional features we really have.
/// "separate-options" tells libvirt it may use the long options (`--shared-dir`, `--cache`...).
/// "migrate-precopy": we log dirty pages and transfer our state (docs/migration.md).
public let capabilitiesJSON = """
    {
      "type": "fs",
      "features": [
        "migrate-precopy",
        "separate-options"
      ]
    }

    """

/// `--help` output: every option, grouped, with its default.
public let usageText = """
    usage: virtiofsd --shared-dir=DIR --socket-path=PATH [options]
           virtiofsd --shared-dir=DIR --fd=N [options]
           virtiofsd --shared-dir=DIR --fuse-mount=MOUNTPOINT [options]
           virtiofsd -o source=DIR[,opt...] --socket-path=PATH [options]

    Shares the host directory DIR with a guest through a vhost-user virtio-fs
    device.
    Long options take their value as --opt=VALUE or --opt VALUE. QEMU-style options
    are comma-separated after -o (repeatable; -oLIST also works); write ",," for a
    comma inside a value. When an option is given twice, the last one wins.

    Information:
      -h, --help                   print this help and exit
      -V, --version                print the version and exit
      --print-capabilities         print the vhost-user backend capabilities as
                                   JSON and exit

    Shared directory and socket:
      --shared-dir=DIR, -o source=DIR
                                   the directory to share (required)
      --tag=TAG                    device tag, for log lines only (max. 36 bytes)
      --socket-path=PATH, --socket=PATH
                                   create and listen on this vhost-user socket
      --socket-group=GROUP         group owner of the socket (with --socket-path)
      --fd=N                       serve on this inherited listening socket
                                   (libvirt); not with --socket-path
      --fuse-mount=MOUNTPOINT      serve a host FUSE mount at MOUNTPOINT instead
                                   of vhost-user (testing); no socket needed

    Threads and queues:
      --thread-pool-size=N         worker threads for busy queues, 0 to 1024;
                                   0: every request runs on its queue thread
                                   (default 0)
      --num-request-queues=N       most request queues offered to the guest,
                                   1 to 16; a thread starts only for each queue
                                   the guest enables (default 16)
      -o max_idle_threads=N        accepted for compatibility; no effect

    Caching:
      --cache=MODE, -o cache=MODE  auto, always, metadata, never (or none)
                                   (default auto)
      -o timeout=SECONDS           entry and attribute timeout, fractions allowed
                                   (default: never 0, auto 1, metadata and
                                   always 86400)
      --no-readdirplus, -o readdirplus|no_readdirplus
                                   READDIRPLUS (default on, off with cache=never)
      --writeback, -o writeback|no_writeback
                                   guest writeback cache (default off)
      --allow-direct-io, -o allow_direct_io|no_allow_direct_io
                                   honour O_DIRECT from the guest (default off)
      --allow-mmap                 allow shared mmap with cache=never or
                                   metadata (default off)

    Extended attributes:
      --xattr, -o xattr|no_xattr   extended attributes (default off)
      --posix-acl, -o posix_acl|no_posix_acl
                                   POSIX ACLs, implies xattr (default off)
      --security-label, -o security_label|no_security_label
                                   security labels on create, implies xattr
                                   (default off)
      --xattrmap=RULES, -o xattrmap=RULES
                                   xattr name mapping rules, implies xattr
                                   (default none)

    File system behaviour:
      -o flock|no_flock            flock(2) locks (default off)
      -o posix_lock|no_posix_lock  POSIX record locks (default off)
      --announce-submounts, --no-announce-submounts, -o announce_submounts
                                   tell the guest which directories are mount points
                                   (default on)
      --killpriv-v2, --no-killpriv-v2, -o killpriv_v2|no_killpriv_v2
                                   FUSE_HANDLE_KILLPRIV_V2 (default on)
      --inode-file-handles[=MODE]  hold inodes as file handles: never, prefer,
                                   mandatory (default never; bare option: prefer)
      --readonly                   refuse every change to the shared directory
                                   (default off)
      --preserve-noatime           keep O_NOATIME from the guest (default: drop it)
      -o norace, -o allow_root     accepted for compatibility; no effect

    Live migration (docs/migration.md):
      --migration-mode=MODE        how the destination finds the guest's files:
                                   find-paths (paths looked up when the state is
                                   saved) or file-handles (default find-paths)
      --migration-on-error=POLICY  a file the destination cannot restore: abort
                                   the migration, or guest-error (that file
                                   answers errors) (default abort)
      --migration-verify-handles   file-handles: check that each handle opens the
                                   source's inode number (default off)
      --migration-confirm-paths    find-paths: check on the source that each path
                                   leads to the same file (default off)

    Isolation:
      --sandbox=MODE, -o sandbox=MODE
                                   namespace, chroot, none (default namespace)
      --seccomp=ACTION             on a forbidden system call: none, kill, log, trap
                                   (default kill)
      --modcaps=LIST, -o modcaps=LIST
                                   change the kept capabilities,
                                   e.g. +sys_admin:-chown
      --rlimit-nofile=N            RLIMIT_NOFILE to set; 0 leaves it unchanged
                                   (default: raised as far as allowed)

    Identity (each may repeat; see docs/identity.md):
      --uid-map=:IN:HOST:COUNT:, -o uid_map=:IN:HOST:COUNT:
      --gid-map=:IN:HOST:COUNT:, -o gid_map=:IN:HOST:COUNT:
                                   a range of the sandbox's user namespace: COUNT
                                   ids from IN stand for host ids from HOST
                                   (unprivileged: newuidmap/newgidmap beyond
                                   your own id)
      --translate-uid=RULE, -o translate_uid=RULE
      --translate-gid=RULE, -o translate_gid=RULE
                                   translate ids between guest and host:
                                   map:GUEST:HOST:COUNT      both ways
                                   guest:GUEST:HOST:COUNT    guest to host
                                   host:HOST:GUEST:COUNT     host to guest
                                   squash-guest:GUEST:HOST:COUNT  range to one
                                   squash-host:HOST:GUEST:COUNT   range to one
                                   forbid-guest:GUEST:COUNT  refuse (EPERM)

    Logging:
      --log-level=LEVEL, -o log_level=LEVEL, -o loglevel=LEVEL
                                   off, error (or err), warn, info, debug, trace
                                   (default info)
      -d, -o debug                 same as --log-level=debug
      --syslog                     log to syslog instead of stderr, fatal errors
                                   included (they also go to stderr)
      --stats=PATH                 serve live statistics on a UNIX socket at PATH
                                   (default off); SIGUSR1 logs them
      -f                           stay in the foreground (the default)
      --daemonize                  go to the background once the socket listens

    Signals: SIGTERM, SIGINT and SIGHUP stop the daemon cleanly (exit 0);
    SIGUSR1 writes the statistics to the log.

    """
