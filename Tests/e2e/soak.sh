#!/usr/bin/env bash
# Soak: a real guest runs a mixed workload against the daemon for a long time
# and nothing may be lost.
#
#   Tests/e2e/soak.sh --daemon BIN [--minutes M] [--queues N] [--kill-after S] [--keep]
#
# Mixed mode (default): the guest (guest/soak.c, two worker processes, two vCPUs)
# creates, writes, appends, overwrites, truncates, renames, unlinks, lists, sets
# xattrs, chmods, stats, locks, reads back and fsyncs for M minutes (default 10),
# checking every answer against its model, then lists every live file with its
# size and checksum. Passes when the guest saw no error (the host causes none),
# every listed file is on the host with that size, checksum, mode and xattr and
# nothing else is, and the serving daemon's anonymous memory and descriptor count
# after the guest dropped its caches are back near where they were at the start
# (descriptors: exactly; anonymous memory: within SOAK_RSS_SLACK_KB, default 8192).
#
# --kill-after S: the guest appends to logs and fsyncs, announcing each fsync'd
# length with its checksum; after S seconds the daemon gets SIGKILL. Passes when
# every announced prefix is on the host, byte for byte.
#
# --queues N starts the daemon and the device with N request queues (default 1).
# Exit status: 0 pass, 1 fail, 2 usage or setup error. Environment as run.sh.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

minutes=10 queues=1 kill_after="" daemon=""
while [ $# -gt 0 ]; do
    case "$1" in
        --daemon) daemon=${2:-}; shift 2 ;;
        --daemon=*) daemon=${1#*=}; shift ;;
        --minutes) minutes=${2:-}; shift 2 ;;
        --queues) queues=${2:-}; shift 2 ;;
        --kill-after) kill_after=${2:-}; shift 2 ;;
        --keep) E2E_KEEP=1; shift ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) e2e_die "unknown argument '$1' (see --help)" ;;
    esac
done
[ -n "$daemon" ] || e2e_die "--daemon BIN is required"
e2e_require "$daemon"
e2e_tmp
e2e_build_initramfs
SOAK_HOST="$(dirname "$INITRD")/soak"
RSS_SLACK_KB=${SOAK_RSS_SLACK_KB:-8192}

shared=$E2E_TMP/shared sock=$E2E_TMP/vfs.sock console=$E2E_TMP/console log=$E2E_TMP/daemon.log
mkdir -p "$shared" && chmod 0755 "$shared"
touch "$shared/.probe" && setfattr -n user.probe -v 1 "$shared/.probe" 2>/dev/null ||
    e2e_die "the host file system under $shared has no user xattrs; set TMPDIR"
rm -f "$shared/.probe"

extra=""
device=""
if [ "$queues" -gt 1 ]; then extra="--num-request-queues=$queues" device="num-request-queues=$queues"; fi
e2e_start_daemon "$daemon" "$sock" "$shared" "cache=auto,xattr,flock,posix_lock" "$log" "$extra" ||
    e2e_die "daemon did not start: $(cat "$log")"

if [ -n "$kill_after" ]; then
    guest_cmd="/soak --dir /mnt/soak --durable --workers 2"
    limit=$((kill_after + 240))
else
    guest_cmd="/soak --dir /mnt/soak --seconds $((minutes * 60)) --workers 2"
    limit=$((minutes * 60 + 300))
fi

# The process that serves: the sandbox forks it under the one we started.
server_pid() {
    local child
    child=$(pgrep -P "$DAEMON_PID" | tail -n 1)
    echo "${child:-$DAEMON_PID}"
}
# "anonymous-KiB resident-KiB descriptors" of the serving process.
measure() {
    local pid
    pid=$(server_pid)
    echo "$(awk '/^RssAnon/{print $2}' "/proc/$pid/status") $(awk '/^VmRSS/{print $2}' "/proc/$pid/status") $(ls "/proc/$pid/fd" | wc -l)"
}

# no_timer_check: on a loaded host the emulated guest's early timer check can fail
# and panic the boot ("IO-APIC + timer doesn't work").
timeout -k 5 "$limit" "$QEMU" \
    -accel tcg -cpu max -smp 2 -m "$MEM_MB" \
    -object "memory-backend-memfd,id=mem,size=${MEM_MB}M,share=on" -numa node,memdev=mem \
    -chardev "socket,id=char0,path=$sock" \
    -device "vhost-user-fs-pci,chardev=char0,tag=soakfs${device:+,$device}" \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 loglevel=3 panic=-1 no_timer_check e2e.tag=soakfs e2e.cmd=$(e2e_b64 "$guest_cmd")" \
    -nographic -no-reboot -nic none \
    </dev/null >"$console" 2>"$console.qemu" &
qpid=$!
E2E_PIDS+=("$qpid")

before="" after="" started="" killed="" daemon_died=""
while kill -0 "$qpid" 2>/dev/null; do
    if [ -z "$started" ] && grep -q '^SOAK START' "$console" 2>/dev/null; then
        started=$SECONDS
        before=$(measure)
        echo "soak: guest started ($queues queue(s)); daemon anon/rss KiB, fds: $before"
    fi
    if [ -n "$kill_after" ] && [ -n "$started" ] && [ -z "$killed" ] && [ $((SECONDS - started)) -ge "$kill_after" ]; then
        server=$(server_pid)
        kill -KILL "$server" "$DAEMON_PID" 2>/dev/null
        killed=$SECONDS
        echo "soak: daemon killed with SIGKILL after $kill_after s"
        # The guest's requests now go unanswered: nothing more to learn from it.
        sleep 2
        kill -TERM "$qpid" 2>/dev/null
        break
    fi
    if [ -z "$kill_after" ] && [ -z "$after" ] && grep -q '^SOAK QUIESCED' "$console" 2>/dev/null; then
        # FORGETs for the dropped caches travel on the hiprio queue: give them a moment.
        sleep 3
        after=$(measure)
    fi
    # The daemon exits by itself once the guest powered off and QEMU let go.
    if [ -z "$kill_after" ] && ! kill -0 "$DAEMON_PID" 2>/dev/null && ! grep -q '^SOAK END' "$console" 2>/dev/null; then
        echo "soak: FAIL the daemon died under the running guest"
        daemon_died=1
        kill -TERM "$qpid" 2>/dev/null
        break
    fi
    sleep 0.5
done
wait "$qpid" 2>/dev/null
tr -d '\r' <"$console" >"$console.txt"
fail=0
bad() { echo "soak: FAIL $*"; fail=1; }
[ -z "$daemon_died" ] || fail=1

grep -a '^SOAK ERROR' "$console.txt" | head -n 20
errors=$(grep -a -c '^SOAK ERROR' "$console.txt")
[ "$errors" = 0 ] || bad "the guest saw $errors errors"

if [ -n "$kill_after" ]; then
    [ -n "$killed" ] || bad "the guest never started (see $console.txt)"
    claims=0 checked=0 bytes=0
    # The last claim per file covers the earlier ones (append-only).
    declare -A last_size=() last_hash=()
    while read -r _ _ path size hash; do
        last_size[$path]=$size last_hash[$path]=$hash
        claims=$((claims + 1))
    done < <(grep -a '^SOAK DURABLE ' "$console.txt")
    for path in "${!last_size[@]}"; do
        got=$(SOAK_PREFIX=${last_size[$path]} "$SOAK_HOST" --hash "$shared/soak/$path" 2>&1)
        if [ "$got" = "${last_size[$path]} ${last_hash[$path]}" ]; then
            checked=$((checked + 1)) bytes=$((bytes + last_size[$path]))
        else
            bad "$path: fsync'd ${last_size[$path]} bytes ${last_hash[$path]}, host has '$got'"
        fi
    done
    [ "$claims" -gt 0 ] || bad "no fsync was announced before the kill"
    echo "soak: $claims fsync claims over ${#last_size[@]} files; $checked files, $bytes fsync'd bytes found on the host"
else
    grep -a -q '^SOAK END failed_workers=0' "$console.txt" || bad "the guest did not finish cleanly (see $console.txt)"
    files=0 bytes=0
    declare -A listed=()
    while read -r _ _ path size hash mode xattr; do
        listed[$path]=1
        files=$((files + 1))
        got=$("$SOAK_HOST" --hash "$shared/soak/$path" 2>&1)
        [ "$got" = "$size $hash" ] || { bad "$path: guest wrote $size bytes $hash, host has '$got'"; continue; }
        bytes=$((bytes + size))
        hmode=$(stat -c %a "$shared/soak/$path")
        [ "$hmode" = "$mode" ] || bad "$path: mode $hmode on the host, $mode in the guest"
        hx=$(getfattr --only-values -n user.soak "$shared/soak/$path" 2>/dev/null)
        [ "${hx:--}" = "$xattr" ] || bad "$path: xattr '$hx' on the host, '$xattr' in the guest"
    done < <(grep -a '^SOAK FILE ' "$console.txt")
    while read -r f; do
        [ -n "${listed[${f#"$shared/soak/"}]:-}" ] || bad "${f#"$shared/"} is on the host but not in the guest's list"
    done < <(find "$shared/soak" -type f)
    grep -a '^SOAK WORKER' "$console.txt" | sed 's/^/soak: /'
    echo "soak: $files files, $bytes bytes verified on the host"
    if [ -z "$before" ] || [ -z "$after" ]; then
        bad "no daemon measurements (start: '${before}', end: '${after}')"
    else
        read -r anon0 rss0 fd0 <<<"$before"
        read -r anon1 rss1 fd1 <<<"$after"
        echo "soak: daemon anonymous memory ${anon0} -> ${anon1} KiB, resident ${rss0} -> ${rss1} KiB, descriptors ${fd0} -> ${fd1}"
        [ "$fd1" -le "$fd0" ] || bad "descriptors grew from $fd0 to $fd1"
        [ "$anon1" -le $((anon0 + RSS_SLACK_KB)) ] || bad "anonymous memory grew by $((anon1 - anon0)) KiB (more than $RSS_SLACK_KB)"
    fi
    e2e_stop_daemon
    [ "$DAEMON_EXIT" = 0 ] || bad "daemon exit: $DAEMON_EXIT $DAEMON_EXIT_NOTE"
fi
if [ "$fail" = 0 ]; then echo "soak: PASS"; else echo "soak: console and logs in $E2E_TMP (kept)"; E2E_KEEP=1; fi
exit "$fail"
