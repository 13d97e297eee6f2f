#!/usr/bin/env bash
# Guest-visible benchmark: the same small workload, run by a real guest kernel (QEMU,
# TCG) on a file system shared by each daemon in turn, plus QEMU's own 9p.
#
#   Tests/e2e/bench-guest.sh [--daemon BIN] [--qemu-c BIN] [--rust BIN] [--no-qemu-c]
#                            [--no-rust] [--no-9p] [--modes "auto none"] [--rounds N]
#                            [--smoke] [--keep]
#
# Columns: ours (--daemon, default .build/release/virtiofsd), qemu-c (QEMU's C
# virtiofsd, default /usr/lib/qemu/virtiofsd), rust (the Rust virtiofsd, default
# ../shared/tools/rust-virtiofsd next to the repository, skipped with a note when
# missing), 9p (QEMU's virtio-9p, -fsdev local,security_model=passthrough).
# Modes: auto (daemons -o cache=auto, Rust --cache=auto, 9p cache=loose) and none
# (cache=none, Rust --cache=never, 9p cache=none); 9p mounts with msize=512000.
# Each round boots one guest per column x mode, in an order rotated every round; the
# guest program (guest/fsbench.c) does sequential write+fsync, cold sequential read,
# cold 4 KiB random reads, create+write 4 KiB+close, cold stat, cold readdir and
# unlink, where cold means a fresh mount and dropped guest caches. The table shows
# the median over the rounds; higher is better everywhere.
# --smoke: one round, tiny sizes, ours and 9p in cache=auto only (tests this script).
# Environment: BENCH_ROUNDS (3), BENCH_SEQ_MIB (64), BENCH_FILES (2000), BENCH_RAND
# (2000), E2E_BOOT_TIMEOUT (seconds per boot, default 900 here), E2E_KEEP=1.
# Exit status: 0 when every cell ran, 1 when some cell failed, 2 on usage errors.
set -uo pipefail
E2E_BOOT_TIMEOUT=${E2E_BOOT_TIMEOUT:-900}
source "$(dirname "$0")/lib.sh"

daemon=$REPO_ROOT/.build/release/virtiofsd
qemu_c=/usr/lib/qemu/virtiofsd
rust=$(cd "$REPO_ROOT/.." && pwd)/shared/tools/rust-virtiofsd
use_c=1 use_rust=1 use_9p=1 smoke=""
modes="auto none"
rounds=${BENCH_ROUNDS:-3}
seq_mib=${BENCH_SEQ_MIB:-64} files=${BENCH_FILES:-2000} rand=${BENCH_RAND:-2000}
command_line="Tests/e2e/bench-guest.sh${*:+ $*}"
while [ $# -gt 0 ]; do
    case "$1" in
        --daemon) daemon=${2:-}; shift 2 ;;
        --qemu-c) qemu_c=${2:-}; shift 2 ;;
        --rust) rust=${2:-}; shift 2 ;;
        --no-qemu-c) use_c=""; shift ;;
        --no-rust) use_rust=""; shift ;;
        --no-9p) use_9p=""; shift ;;
        --modes) modes=${2:-}; shift 2 ;;
        --rounds) rounds=${2:-}; shift 2 ;;
        --smoke) smoke=1; shift ;;
        --keep) E2E_KEEP=1; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) e2e_die "unknown argument '$1' (see --help)" ;;
    esac
done
if [ -n "$smoke" ]; then
    use_c="" use_rust="" modes=auto rounds=1
    seq_mib=${BENCH_SEQ_MIB:-4} files=${BENCH_FILES:-100} rand=${BENCH_RAND:-100}
fi
for m in $modes; do
    case "$m" in auto|none) ;; *) e2e_die "unknown mode '$m' (auto or none)" ;; esac
done
case "$rounds" in ''|*[!0-9]*|0) e2e_die "--rounds needs a positive number" ;; esac
e2e_require "$daemon"

notes=()
columns="ours"
if [ -n "$use_c" ]; then
    if [ -x "$qemu_c" ]; then columns="$columns qemu-c"; else notes+=("qemu-c skipped: $qemu_c not found"); fi
fi
if [ -n "$use_rust" ]; then
    if [ -x "$rust" ] && timeout 600 "$rust" --version >/dev/null 2>&1; then
        columns="$columns rust"
    else
        notes+=("rust skipped: $rust missing or does not run")
    fi
fi
[ -n "$use_9p" ] && columns="$columns 9p"

e2e_tmp
e2e_build_initramfs
RESULTS=$E2E_TMP/results # lines: column mode round metric value
: >"$RESULTS"
METRICS="seq_write seq_read rand_read create stat readdir unlink"
TAG=benchfs

# ninep_cache MODE: the 9p cache mode closest to the virtio-fs cache mode.
ninep_cache() { [ "$1" = auto ] && echo loose || echo none; }
daemon_cache() { [ "$1" = auto ] && echo auto || echo none; }

# start_cell_daemon COLUMN MODE SHARED SOCK LOG: sets DAEMON_PID, returns 1 on failure.
start_cell_daemon() {
    local column=$1 mode=$2 shared=$3 sock=$4 log=$5
    case "$column" in
        ours) e2e_start_daemon "$daemon" "$sock" "$shared" "cache=$(daemon_cache "$mode")" "$log" ;;
        qemu-c) e2e_start_daemon "$qemu_c" "$sock" "$shared" "cache=$(daemon_cache "$mode")" "$log" ;;
        rust)
            local cache=auto
            [ "$mode" = none ] && cache=never
            rm -f "$sock"
            "$rust" --socket-path="$sock" --shared-dir="$shared" --cache="$cache" >"$log" 2>&1 </dev/null &
            # Its first start may still be unpacking its tree: a longer wait.
            e2e_adopt_daemon "$!" "$sock" 300 ;;
    esac
}

# boot_cell COLUMN MODE SOCK SHARED CONSOLE: boots the benchmark guest, waits for it.
boot_cell() {
    local column=$1 mode=$2 sock=$3 shared=$4 console=$5
    local fstype=virtiofs opts="" args
    local -a dev
    if [ "$column" = 9p ]; then
        fstype=9p
        opts="trans=virtio,version=9p2000.L,msize=512000,cache=$(ninep_cache "$mode")"
        dev=(-fsdev "local,id=fs0,path=$shared,security_model=passthrough"
             -device "virtio-9p-pci,fsdev=fs0,mount_tag=$TAG")
    else
        dev=(-chardev "socket,id=char0,path=$sock" -device "vhost-user-fs-pci,chardev=char0,tag=$TAG")
    fi
    args="--source $TAG --fstype $fstype --seq-mib $seq_mib --files $files --rand $rand${opts:+ --options $opts}"
    timeout -k 5 "$BOOT_TIMEOUT" "$QEMU" \
        -accel tcg -cpu max -m "$MEM_MB" \
        -object "memory-backend-memfd,id=mem,size=${MEM_MB}M,share=on" -numa node,memdev=mem \
        "${dev[@]}" \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyS0 loglevel=3 panic=-1 no_timer_check rdinit=/bench-init bench.fstype=$fstype bench.args=$(e2e_b64 "$args")" \
        -nographic -no-reboot -nic none \
        </dev/null >"$console" 2>"$console.qemu" &
    local qpid=$!
    E2E_PIDS+=("$qpid")
    # A daemon that dies under the guest leaves it waiting forever: end QEMU then.
    local grace=0
    while kill -0 "$qpid" 2>/dev/null; do
        if [ "$column" != 9p ] && ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            grace=$((grace + 1))
            [ "$grace" -gt 20 ] && { kill -TERM "$qpid" 2>/dev/null; break; }
        fi
        sleep 0.5
    done
    local rc=0
    wait "$qpid" || rc=$?
    return "$rc"
}

# run_cell COLUMN MODE ROUND: appends its numbers to $RESULTS, or prints why it failed.
failures=0
run_cell() {
    local column=$1 mode=$2 round=$3
    local base=$E2E_TMP/$column.$mode.$round
    local shared=$base.shared sock=$base.sock console=$base.console
    mkdir -p "$shared"
    chmod 0755 "$shared"
    local start=$SECONDS rc=0
    if [ "$column" != 9p ]; then
        if ! start_cell_daemon "$column" "$mode" "$shared" "$sock" "$base.daemon.log"; then
            echo "  round $round $column cache=$mode: FAIL daemon did not start: $(tail -n 1 "$base.daemon.log")"
            failures=$((failures + 1))
            e2e_stop_daemon
            rm -rf "$shared"
            return
        fi
    fi
    boot_cell "$column" "$mode" "$sock" "$shared" "$console" || rc=$?
    [ "$column" != 9p ] && e2e_stop_daemon
    tr -d '\r' <"$console" >"$console.txt"
    local got
    got=$(grep -a -c '^BENCH [a-z_]* ' "$console.txt")
    grep -a '^BENCH [a-z_]* ' "$console.txt" |
        awk -v c="$column" -v m="$mode" -v r="$round" '{ print c, m, r, $2, $3 }' >>"$RESULTS"
    if grep -a -q '^BENCH_DONE' "$console.txt"; then
        # Every number, not only the medians: the spread between rounds shows the noise.
        echo "  round $round $column cache=$mode: $((SECONDS - start))s;" \
             "$(grep -a '^BENCH [a-z_]* ' "$console.txt" | awk '{ printf "%s%s=%s", sep, $2, $3; sep = " " }')"
    else
        local why
        why=$(grep -a -h -m1 -E '^BENCH_FAIL|Kernel panic|qemu-system' "$console.txt" "$console.qemu" | head -n 1)
        [ "$rc" = 124 ] && why="timed out after ${BOOT_TIMEOUT}s${why:+; $why}"
        echo "  round $round $column cache=$mode: FAIL after $got results: ${why:-qemu exit $rc}" \
             "$([ "$column" != 9p ] && tail -n 1 "$base.daemon.log")"
        failures=$((failures + 1))
    fi
    rm -rf "$shared"
}

cells=()
for mode in $modes; do
    for column in $columns; do cells+=("$column $mode"); done
done
n=${#cells[@]}
step=$(( (n + rounds - 1) / rounds ))
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench-guest: columns: $columns; modes: $modes; $rounds round(s) of $n boots;" \
     "seq ${seq_mib} MiB, $files files, $rand random reads"
for note in "${notes[@]}"; do echo "  note: $note"; done
t0=$SECONDS
for round in $(seq 1 "$rounds"); do
    # Rotate the order every round, so no cell always runs first or last.
    offset=$(( (round - 1) * step % n ))
    for i in $(seq 0 $((n - 1))); do
        read -r column mode <<<"${cells[$(( (i + offset) % n ))]}"
        run_cell "$column" "$mode" "$round"
    done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# median COLUMN MODE METRIC: median over the rounds that produced a number, "-" if none,
# marked "(n=K)" when fewer than all rounds did.
median() {
    awk -v c="$1" -v m="$2" -v k="$3" -v rounds="$rounds" '
        $1==c && $2==m && $4==k { v[n++] = $5 }
        END {
            if (n == 0) { print "-"; exit }
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            x = (n % 2) ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
            s = (x >= 100) ? sprintf("%.0f", x) : sprintf("%.1f", x)
            if (n < rounds) s = s " (n=" n ")"
            print s
        }' "$RESULTS"
}
unit() {
    case "$1" in seq_write|seq_read) echo "MB/s" ;; readdir) echo "entries/s" ;; *) echo "ops/s" ;; esac
}

echo
echo "Command: $command_line"
echo "Host load average (1/5/15 min): $load_start at the start, $load_end at the end; $((SECONDS - t0))s in all."
for note in "${notes[@]}"; do echo "Note: $note."; done
for mode in $modes; do
    echo
    header="| cache=$mode$([ -n "$use_9p" ] && echo " (9p: cache=$(ninep_cache "$mode"))") |"
    rule="|---|"
    for column in $columns; do header="$header $column |"; rule="$rule---:|"; done
    echo "$header"
    echo "$rule"
    for metric in $METRICS; do
        row="| $metric $(unit "$metric") |"
        for column in $columns; do row="$row $(median "$column" "$mode" "$metric") |"; done
        echo "$row"
    done
done
[ "$failures" = 0 ]
