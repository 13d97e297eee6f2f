# Shared pieces of the guest rig: starting a virtio-fs daemon, booting the test
# guest under QEMU (TCG, no KVM) and always cleaning up what was started.
# Sourced by run.sh, demo.sh and rootfs.sh (bash).

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_DIR/../.." && pwd)
QEMU=${QEMU:-qemu-system-x86_64}
KERNEL=${E2E_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
BOOT_TIMEOUT=${E2E_BOOT_TIMEOUT:-180}
MEM_MB=${E2E_MEM_MB:-512}

# Every process we start is recorded here and reaped on exit, whatever happens.
E2E_PIDS=()
e2e_cleanup() {
    local pid
    for pid in "${E2E_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${E2E_PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    E2E_PIDS=()
    if [ -n "${E2E_TMP:-}" ] && [ -z "${E2E_KEEP:-}" ]; then rm -rf "$E2E_TMP"; fi
}
trap e2e_cleanup EXIT
trap 'exit 130' INT TERM

e2e_die() { echo "$(basename "$0"): $*" >&2; exit 2; }

e2e_require() {
    [ -x "$1" ] || e2e_die "daemon binary '$1' not found or not executable (build it first: make release)"
    [ -r "$KERNEL" ] || e2e_die "no guest kernel in /boot (install linux-image-amd64)"
    command -v "$QEMU" >/dev/null || e2e_die "$QEMU missing (install qemu-system-x86)"
    [ "$(id -u)" = 0 ] || e2e_die "must run as root (the daemon needs it)"
}

# Work area for sockets, consoles and shared directories; removed on exit unless E2E_KEEP is set.
e2e_tmp() {
    E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/virtiofs-e2e.XXXXXX")
    chmod 0755 "$E2E_TMP"
}

# e2e_build_initramfs: sets INITRD (cached build).
e2e_build_initramfs() {
    INITRD=$("$E2E_DIR/build-initramfs.sh") || e2e_die "could not build the guest initramfs"
    CHECKS_HOST="$(dirname "$INITRD")/checks"
}

# e2e_start_daemon BIN SOCKET SHARED_DIR OPTIONS LOG [EXTRA_ARGS]
# Starts the daemon with QEMU-virtiofsd style options (both ours and the C reference
# accept them), plus EXTRA_ARGS (split on spaces), and waits until its socket exists.
# Sets DAEMON_PID. Returns 1 if the daemon died or never created the socket.
e2e_start_daemon() {
    local bin=$1 sock=$2 shared=$3 opts=$4 log=$5
    local -a extra=() prefix=()
    read -r -a extra <<<"${6:-}"
    # E2E_DAEMON_PREFIX: a command the daemon runs under, e.g. "prlimit --nofile=N:N".
    read -r -a prefix <<<"${E2E_DAEMON_PREFIX:-}"
    rm -f "$sock"
    "${prefix[@]}" "$bin" --socket-path="$sock" -o "source=$shared${opts:+,$opts}" "${extra[@]}" >"$log" 2>&1 </dev/null &
    e2e_adopt_daemon "$!" "$sock" 100
}

# e2e_adopt_daemon PID SOCKET TRIES: records a daemon just started in the background
# (DAEMON_PID, reaped on exit) and waits up to TRIES tenths of a second for its socket.
# Returns 1 if the daemon died or never created the socket.
e2e_adopt_daemon() {
    DAEMON_PID=$1
    E2E_PIDS+=("$DAEMON_PID")
    local _
    for _ in $(seq 1 "$3"); do
        [ -S "$2" ] && return 0
        kill -0 "$DAEMON_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# e2e_stop_daemon: the daemon normally exits when QEMU disconnects; give it a moment, then end it.
# Sets DAEMON_EXIT to the daemon's own exit status, or to "stopped" when it had to be
# ended (DAEMON_EXIT_NOTE says how).
e2e_stop_daemon() {
    local pid=$DAEMON_PID
    DAEMON_EXIT="" DAEMON_EXIT_NOTE=""
    for _ in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        DAEMON_EXIT=stopped DAEMON_EXIT_NOTE="still running after the guest left; sent SIGTERM"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            DAEMON_EXIT=killed DAEMON_EXIT_NOTE="ignored SIGTERM for 2s; killed"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    else
        local st=0
        wait "$pid" 2>/dev/null || st=$?
        DAEMON_EXIT=$st
        if [ "$st" -gt 128 ]; then DAEMON_EXIT_NOTE="died of signal $((st - 128))"; fi
    fi
}

# e2e_boot SOCKET TAG APPEND CONSOLE [DEVICE_EXTRA]
# Boots the test guest with one vhost-user-fs device and waits for it to power off
# (or for the timeout). The console (serial) goes to CONSOLE, QEMU's own errors to
# CONSOLE.qemu. Returns QEMU's exit status (124 on timeout). no_timer_check: on a
# loaded host the emulated guest's early IO-APIC timer check can fail and panic it.
e2e_boot() {
    local sock=$1 tag=$2 append=$3 console=$4 extra=${5:-}
    timeout -k 5 "$BOOT_TIMEOUT" "$QEMU" \
        -accel tcg -cpu max -m "$MEM_MB" \
        -object "memory-backend-memfd,id=mem,size=${MEM_MB}M,share=on" -numa node,memdev=mem \
        -chardev "socket,id=char0,path=$sock" \
        -device "vhost-user-fs-pci,chardev=char0,tag=$tag${extra:+,$extra}" \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyS0 loglevel=3 panic=-1 no_timer_check $append" \
        -nographic -no-reboot -nic none \
        </dev/null >"$console" 2>"$console.qemu" &
    local qpid=$!
    E2E_PIDS+=("$qpid")
    # A daemon that dies under a running guest leaves the guest waiting forever for
    # replies: give QEMU a few seconds to finish on its own, then end it.
    DAEMON_DIED=""
    local grace=0
    while kill -0 "$qpid" 2>/dev/null; do
        if [ -n "${DAEMON_PID:-}" ] && ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            grace=$((grace + 1))
            if [ "$grace" -gt 20 ]; then
                DAEMON_DIED=1
                kill -TERM "$qpid" 2>/dev/null || true
                break
            fi
        fi
        sleep 0.5
    done
    local rc=0
    wait "$qpid" || rc=$?
    return "$rc"
}

# e2e_daemon_supports_mq BIN: QEMU's own C daemon (libvhost-user) has one request
# queue only and aborts on a second one, so the multi-queue run is n/a for it.
e2e_daemon_supports_mq() {
    ! timeout 5 "$1" --version </dev/null 2>&1 | grep -q 'QEMU Project'
}

# e2e_populate_shared DIR: the host side of the shared tree, the known content the
# guest checks read (needs CHECKS_HOST from e2e_build_initramfs).
e2e_populate_shared() {
    local d=$1
    mkdir -p "$d"
    chmod 0755 "$d"
    printf 'hello from the host\n' >"$d/hello.txt"
    chmod 0644 "$d/hello.txt"
    "$CHECKS_HOST" --pattern 65536 >"$d/data.bin"
    ln -s hello.txt "$d/link-to-hello"
    printf 'linked\n' >"$d/hl-a"
    ln "$d/hl-a" "$d/hl-b"
    printf 'x\n' >"$d/xattr-file"
    setfattr -n user.e2e.color -v blue "$d/xattr-file" || e2e_die "the host file system under $d has no user xattrs; set TMPDIR"
    mkdir -p "$d/tree/a/b/c"
    chmod 0755 "$d/tree" "$d/tree/a" "$d/tree/a/b" "$d/tree/a/b/c"
    printf 'deep\n' >"$d/tree/a/b/c/deep.txt"
    printf 'one\n' >"$d/tree/one.txt"
    printf 'two\n' >"$d/tree/two.txt"
    printf 'version 1\n' >"$d/changing.txt"
    printf '#!/bin/sh\n' >"$d/suid-file"
    chown -R 0:0 "$d"
    # After chown: changing the owner clears the setuid bit.
    chmod 04755 "$d/suid-file"
}

# e2e_start_replacer DIR: answers the guest's host_replace_seen check by replacing
# changing.txt (a new inode under the old name) once the guest asks. Sets REPLACER_PID.
e2e_start_replacer() {
    local d=$1
    (
        while [ ! -e "$d/work/please-replace" ]; do sleep 0.2; done
        printf 'version 2\n' >"$d/changing.txt.new"
        mv -f "$d/changing.txt.new" "$d/changing.txt"
        : >"$d/work/replaced"
    ) &
    REPLACER_PID=$!
    E2E_PIDS+=("$REPLACER_PID")
}

# Base64 without line breaks, for passing a shell command on the kernel command line.
e2e_b64() { printf '%s' "$1" | base64 -w0; }

# e2e_daemon_arguments HELP_LINES ARGS...: the `--daemon BIN [--keep]` command line of
# the single-daemon scripts; sets $daemon (checked to be runnable) and E2E_KEEP.
# HELP_LINES is the sed range of the calling script's header comment shown by --help.
e2e_daemon_arguments() {
    local help=$1; shift
    daemon=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --daemon) daemon=${2:-}; shift 2 ;;
            --daemon=*) daemon=${1#*=}; shift ;;
            --keep) E2E_KEEP=1; shift ;;
            -h|--help) sed -n "$help" "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
            *) e2e_die "unknown argument '$1' (see --help)" ;;
        esac
    done
    [ -n "$daemon" ] || e2e_die "--daemon BIN is required"
    e2e_require "$daemon"
}
