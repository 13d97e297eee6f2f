#!/usr/bin/env bash
# Live migration of a guest with a virtio-fs share, under QEMU 10 (TCG).
#
#   Tests/e2e/migrate.sh --daemon BIN [--mode find-paths|file-handles] [--rename]
#                        [--cache none|always] [--big-tree N] [--source-daemon BIN] [--keep]
#
# Two QEMU 10 instances on this machine: the source boots the test guest, the
# destination waits with -incoming tcp:127.0.0.1:PORT; each has its own daemon on the
# same shared directory. Inside the share the guest holds open files (one read, one
# appended to, one the host renames during the migration with --rename), a working
# directory, and keeps appending and reading while QEMU migrates. (Locks are not
# part of the state yet; the guest's busybox has no flock to take one either.)
# After the switch the guest checks on the destination that its open files, its
# working directory and new files still work and that contents match checksums;
# the host then checks the tree. --big-tree N makes the guest look up N more files
# first (with --cache always the guest keeps them; the state size is printed).
# While memory is copied the guest also reads files it never read before; with
# --cache always they stay in its page cache, where only the daemon's writes put
# them (the guest runs with init_on_alloc=0, so its CPU does not zero those pages
# first, which would make QEMU resend them anyway), and are checked on the
# destination: a daemon built with dirty logging switched off fails this check
# (42 of 151 files differed in one run), ours passes it.
# --source-daemon runs another daemon on the source (e.g. the Rust virtiofsd, to see
# what a migration between the two daemons does).
# Prints CHECK lines, the downtime and the state size. Exit status: 0 when every
# check passed, 1 otherwise, 2 on usage errors.
# Environment: QEMU10 (default ../shared/tools/qemu10 beside the checkout),
# E2E_BOOT_TIMEOUT, E2E_KEEP=1 keeps the work directory.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

daemon="" mode=find-paths rename="" big=0 cache=none source_daemon=""
while [ $# -gt 0 ]; do
    case "$1" in
        --daemon) daemon=${2:-}; shift 2 ;;
        --daemon=*) daemon=${1#*=}; shift ;;
        --mode) mode=${2:-}; shift 2 ;;
        --mode=*) mode=${1#*=}; shift ;;
        --rename) rename=1; shift ;;
        --cache) cache=${2:-}; shift 2 ;;
        --cache=*) cache=${1#*=}; shift ;;
        --big-tree) big=${2:-0}; shift 2 ;;
        --big-tree=*) big=${1#*=}; shift ;;
        --source-daemon) source_daemon=${2:-}; shift 2 ;;
        --source-daemon=*) source_daemon=${1#*=}; shift ;;
        --keep) E2E_KEEP=1; shift ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) e2e_die "unknown argument '$1' (see --help)" ;;
    esac
done
case "$mode" in find-paths|file-handles) ;; *) e2e_die "--mode: find-paths or file-handles" ;; esac
case "$cache" in none|always) ;; *) e2e_die "--cache: none or always" ;; esac
[ -n "$daemon" ] || e2e_die "--daemon BIN is required"
QEMU=${QEMU10:-$REPO_ROOT/../shared/tools/qemu10}
e2e_require "$daemon"
e2e_tmp
e2e_build_initramfs

T=$E2E_TMP
shared=$T/shared
e2e_populate_shared "$shared"
m=$shared/mig
mkdir -p "$m/cwd" "$m/big"
"$CHECKS_HOST" --pattern 1048576 >"$m/data.bin"
printf 'rename me\n' >"$m/cwd/held.txt"
printf 'cwd marker\n' >"$m/cwd/marker.txt"
: >"$m/cwd/log.txt"
sha256sum <"$m/data.bin" | cut -c1-64 >"$m/expected.sha"
for i in $(seq 1 "$big"); do : >"$m/big/f$i"; done
# Files the guest reads for the first time during the migration, each different.
mkdir -p "$m/fresh"
for i in $(seq 1 400); do
    { printf 'fresh file %d\n' "$i"; head -c 131072 "$m/data.bin"; printf '%d\n' "$i"; } >"$m/fresh/f$i"
done
(cd "$m/fresh" && sha256sum f*) >"$m/fresh.sha256"
chown -R 0:0 "$m"
# Everything the guest does not change, to compare after the migration.
manifest() { (cd "$shared" && find . -path ./mig -prune -o -type f -print0 | sort -z | xargs -0 sha256sum); }
manifest >"$T/manifest.before"

# The guest: set up what it holds, signal, then keep writing and reading until the
# host says the migration is over, then check everything from the destination.
read -r -d '' guest <<'EOF'
cd /mnt/mig/cwd || exit 1
exec 3</mnt/mig/data.bin
exec 4>>log.txt
exec 5<held.txt
[ -n "$BIG" ] && ls -l /mnt/mig/big >/dev/null
# Fresh files are read one after another from the moment the migration may start.
( k=0; while [ $k -lt 400 ] && [ ! -e /mnt/mig/go-verify ]; do
      k=$((k + 1)); cat /mnt/mig/fresh/f$k >/dev/null; done; echo "E2E fresh files read: $k" ) &
reader=$!
: >/mnt/mig/guest-ready
i=0
while [ ! -e /mnt/mig/go-verify ]; do
    i=$((i + 1))
    echo "line $i" >&4
    sha256sum </mnt/mig/data.bin >/dev/null
done
wait $reader
echo "E2E loop ended after $i lines"
want=$(cat /mnt/mig/expected.sha)
got=$(sha256sum <&3 | cut -c1-64)
[ "$got" = "$want" ] && echo "CHECK held_read PASS" || echo "CHECK held_read FAIL sha $got"
got=$(sha256sum </mnt/mig/data.bin | cut -c1-64)
[ "$got" = "$want" ] && echo "CHECK reopen_read PASS" || echo "CHECK reopen_read FAIL sha $got"
echo "after migration" >&4 && echo "CHECK held_append PASS" || echo "CHECK held_append FAIL"
l=$(cat <&5)
[ "$l" = "rename me" ] && echo "CHECK held_renamed PASS" || echo "CHECK held_renamed FAIL read '$l'"
[ "$(cat marker.txt)" = "cwd marker" ] && echo "CHECK cwd PASS" || echo "CHECK cwd FAIL $(pwd): $(ls 2>&1 | head -3)"
echo "made after migration" >new-after.txt && [ "$(cat new-after.txt)" = "made after migration" ] &&
    echo "CHECK create_after PASS" || echo "CHECK create_after FAIL"
bad=$(cd /mnt/mig/fresh && sha256sum -c ../fresh.sha256 2>&1 | grep -vc ': OK$')
[ "$bad" = 0 ] && echo "CHECK fresh_reads PASS" || echo "CHECK fresh_reads FAIL $bad files differ: $(cd /mnt/mig/fresh && sha256sum -c ../fresh.sha256 2>&1 | grep -v ': OK$' | head -3 | tr '\n' ' ')"
n=$(wc -l <log.txt)
[ "$n" = $((i + 1)) ] && echo "CHECK log_lines PASS $n" || echo "CHECK log_lines FAIL $n lines, wrote $((i + 1))"
exec 3<&- 4>&- 5<&-
cd /
EOF
[ "$big" -gt 0 ] && guest="BIG=1; $guest"
# The script lives in the share: the kernel command line holds only 2048 bytes.
printf '%s\n' "$guest" >"$m/guest.sh"

# QMP over TCP (bash's /dev/tcp): one command, its one-line answer.
qmp_open() { # PORT -> fd in QMP_FD
    local port=$1
    for _ in $(seq 1 100); do
        exec {QMP_FD}<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null && break
        sleep 0.1
    done
    local line
    read -r -t 10 line <&"$QMP_FD" || return 1
    echo '{"execute":"qmp_capabilities"}' >&"$QMP_FD"
    read -r -t 10 line <&"$QMP_FD"
}
qmp() { # FD JSON -> prints the reply line (events skipped)
    local fd=$1 line
    echo "$2" >&"$fd"
    while read -r -t 30 line <&"$fd"; do
        case "$line" in *'"return"'*|*'"error"'*) echo "$line"; return 0 ;; esac
    done
    return 1
}
field() { sed -n "s/.*\"$1\": *\([0-9a-z\"-]*\).*/\1/p" | tr -d '"' | head -n 1; }

port() { echo $((20000 + RANDOM % 30000)); }
mig_port=$(port) src_qmp=$(port) dst_qmp=$(port)
opts="cache=$cache"
extra="--migration-mode=$mode --log-level=info"
e2e_start_daemon "${source_daemon:-$daemon}" "$T/src.sock" "$shared" "$opts" "$T/src-daemon.log" "$extra" || e2e_die "source daemon did not start: $(cat "$T/src-daemon.log")"
src_daemon=$DAEMON_PID
e2e_start_daemon "$daemon" "$T/dst.sock" "$shared" "$opts" "$T/dst-daemon.log" "$extra" || e2e_die "destination daemon did not start: $(cat "$T/dst-daemon.log")"
dst_daemon=$DAEMON_PID

qemu_args() { # SOCKET CONSOLE QMP_PORT
    echo -accel tcg -cpu max -m "$MEM_MB" \
        -object "memory-backend-memfd,id=mem,size=${MEM_MB}M,share=on" -numa node,memdev=mem \
        -chardev "socket,id=char0,path=$1" -device "vhost-user-fs-pci,chardev=char0,tag=myfs" \
        -kernel "$KERNEL" -initrd "$INITRD" -display none -no-reboot -nic none \
        -serial "file:$2" -qmp "tcp:127.0.0.1:$3,server=on,wait=off"
}
append="console=ttyS0 loglevel=3 panic=-1 no_timer_check init_on_alloc=0 e2e.tag=myfs e2e.cmd=$(e2e_b64 "sh /mnt/mig/guest.sh")"
# shellcheck disable=SC2046
"$QEMU" $(qemu_args "$T/src.sock" "$T/src.console" "$src_qmp") -append "$append" </dev/null >"$T/src.qemu" 2>&1 &
src_qemu=$!; E2E_PIDS+=("$src_qemu")
# shellcheck disable=SC2046
"$QEMU" $(qemu_args "$T/dst.sock" "$T/dst.console" "$dst_qmp") -append "$append" \
    -incoming "tcp:127.0.0.1:$mig_port" </dev/null >"$T/dst.qemu" 2>&1 &
dst_qemu=$!; E2E_PIDS+=("$dst_qemu")

fail=0
check() { echo "CHECK $1 $2 ${3:-}"; [ "$2" = PASS ] || fail=1; }
deadline=$((SECONDS + BOOT_TIMEOUT))
while [ ! -e "$m/guest-ready" ]; do
    if [ $SECONDS -gt $deadline ] || ! kill -0 "$src_qemu" 2>/dev/null; then
        check guest_ready FAIL "$(tail -n 5 "$T/src.console" "$T/src.qemu" 2>&1 | tr '\n' ' ')"
        exit 1
    fi
    sleep 0.5
done
check guest_ready PASS
sleep 2  # a few rounds of the guest's loop before the migration starts
qmp_open "$src_qmp" || e2e_die "no QMP on the source"
src_fd=$QMP_FD
qmp_open "$dst_qmp" || e2e_die "no QMP on the destination"
dst_fd=$QMP_FD
# Slow enough that the guest reads many files while memory is being copied.
qmp "$src_fd" '{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":33554432}}' >/dev/null
reply=$(qmp "$src_fd" "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"tcp:127.0.0.1:$mig_port\"}}")
case "$reply" in *'"return"'*) check migrate_started PASS ;; *) check migrate_started FAIL "$reply"; exit 1 ;; esac
if [ -n "$rename" ]; then
    # The host renames a file the guest holds open while memory is being copied.
    mv "$m/cwd/held.txt" "$m/cwd/held-renamed.txt"
fi
status=""
for _ in $(seq 1 600); do
    info=$(qmp "$src_fd" '{"execute":"query-migrate"}')
    status=$(echo "$info" | field status)
    case "$status" in completed|failed|cancelled) break ;; esac
    sleep 0.2
done
downtime=$(echo "$info" | field downtime)
total=$(echo "$info" | field total-time)
[ "$status" = completed ] && check migration_completed PASS "downtime ${downtime}ms, total ${total}ms" ||
    check migration_completed FAIL "status $status: $info $(tail -n 3 "$T/src.qemu" "$T/src-daemon.log" "$T/dst-daemon.log" | tr '\n' ' ')"
dst_status=$(qmp "$dst_fd" '{"execute":"query-status"}' | field status)
[ "$dst_status" = running ] && check destination_running PASS || check destination_running FAIL "$dst_status"
size=$(sed -n 's/.*device state: sending \([0-9]*\) bytes.*/\1/p' "$T/src-daemon.log" | tail -n 1)
echo "STATE_SIZE ${size:-unknown} bytes ($big extra files looked up, mode $mode, cache $cache)"
echo "DOWNTIME ${downtime:-unknown} ms"
# The source QEMU is left paused; end it (its daemon exits with it).
qmp "$src_fd" '{"execute":"quit"}' >/dev/null
: >"$m/go-verify"

# Wait for the guest to finish on the destination.
deadline=$((SECONDS + BOOT_TIMEOUT))
while kill -0 "$dst_qemu" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
kill -0 "$dst_qemu" 2>/dev/null && check destination_finished FAIL "still running after ${BOOT_TIMEOUT}s"
grep -a '^CHECK ' "$T/src.console" "$T/dst.console" 2>/dev/null | sed 's/^[^:]*://' | while read -r _ name st rest; do
    echo "CHECK guest_$name $st $rest"
done
grep -aq '^CHECK .* FAIL' "$T/dst.console" && fail=1
for c in held_read reopen_read held_append held_renamed cwd create_after fresh_reads log_lines; do
    grep -aq "^CHECK $c PASS" "$T/dst.console" || { echo "CHECK guest_$c MISSING"; fail=1; }
done
grep -a '^E2E loop\|^E2E fresh' "$T/src.console" "$T/dst.console" | sed 's/^[^:]*://'

# Host side: the guest's appends arrived in order, its new file exists, nothing else changed.
log=$m/cwd/log.txt
lines=$(grep -c '^line ' "$log")
if [ "$(tail -n 1 "$log")" = "after migration" ] && [ "$(grep '^line ' "$log" | awk '{print $2}' | tr '\n' ' ')" = "$(seq 1 "$lines" | tr '\n' ' ')" ]; then
    check host_log_in_order PASS "$lines lines"
else
    check host_log_in_order FAIL "$(tail -n 3 "$log" | tr '\n' ' ')"
fi
[ "$(cat "$m/cwd/new-after.txt" 2>/dev/null)" = "made after migration" ] && check host_new_file PASS || check host_new_file FAIL
manifest >"$T/manifest.after"
cmp -s "$T/manifest.before" "$T/manifest.after" && check host_tree_unchanged PASS || check host_tree_unchanged FAIL "$(diff "$T/manifest.before" "$T/manifest.after" | head -5 | tr '\n' ' ')"
[ "$(sha256sum <"$m/data.bin" | cut -c1-64)" = "$(cat "$m/expected.sha")" ] && check host_data_intact PASS || check host_data_intact FAIL
grep -h 'migration:\|device state' "$T/src-daemon.log" "$T/dst-daemon.log" | sed 's/^/  daemon: /' | head -20
exit $fail
