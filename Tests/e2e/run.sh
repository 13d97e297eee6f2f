#!/usr/bin/env bash
# End-to-end checks with a real guest kernel.
#
#   Tests/e2e/run.sh --daemon BIN [--reference BIN2] [--config NAME]... [--keep]
#
# For each configuration: prepare a shared directory on the host, start the daemon
# on a fresh socket, boot the test guest under QEMU (TCG), collect the
# `CHECK name PASS|FAIL|SKIP detail` lines the guest prints, then verify on the host
# what the guest wrote. With --reference the same runs are repeated with a second
# daemon and both result columns are printed side by side.
#
# Configurations: auto none none-nokillpriv always-writeback xattr xattrmap mq4 locks (default: all of
# them; mq4 passes no --num-request-queues, as libvirt does: the device property alone
# must get the guest four request queues), and
# on request: fd-limit (the daemon gets RLIMIT_NOFILE 8192 and the guest stats 12000 host
# files); idmap (root daemon in a user namespace, --uid-map/--gid-map :0:100000:65536:, as
# libvirt's <idmap> in system mode); idmap-user (the daemon as uid 1000 with the two
# ranges libvirt's session mode passes, its own id and its subordinate ids: needs
# newuidmap and a subuid/subgid entry for uid 1000); translate (root daemon, no user
# namespace, --translate-uid/--translate-gid map:0:100000:65536). In the identity
# configurations every id the guest writes must land on the host as its mapped id.
# Exit status: 0 when no check of --daemon failed, 1 otherwise, 2 on usage errors.
# Environment: E2E_BOOT_TIMEOUT (seconds per boot, default 180), E2E_KEEP=1 keeps the
# work directory, TMPDIR chooses where shared directories live (needs xattrs and holes).
set -uo pipefail
source "$(dirname "$0")/lib.sh"

ALL_CONFIGS="auto none none-nokillpriv always-writeback xattr xattrmap mq4 locks"
# Run only when asked for (--config NAME): fd-limit is slow and meant to show a limit;
# idmap, idmap-user and translate need subordinate ids or user namespaces (make e2e-identity);
# readme boots the README's recipe (its daemon options and its QEMU device line);
# queue-mismatch gives QEMU more request queues than the daemon offers, which must fail
# with advice in the daemon's log and exit status 1.
EXTRA_CONFIGS="fd-limit idmap idmap-user translate readme queue-mismatch"
# The fd-limit daemon runs with this RLIMIT_NOFILE (soft and hard), and the tree has
# BIG_TREE_DIRS x 1000 files, more than that, whatever the host's own limits are.
FD_LIMIT=8192
BIG_TREE_DIRS=12
daemon="" reference="" configs=""
while [ $# -gt 0 ]; do
    case "$1" in
        --daemon) daemon=${2:-}; shift 2 ;;
        --daemon=*) daemon=${1#*=}; shift ;;
        --reference) reference=${2:-}; shift 2 ;;
        --reference=*) reference=${1#*=}; shift ;;
        --config) configs="$configs ${2:-}"; shift 2 ;;
        --config=*) configs="$configs ${1#*=}"; shift ;;
        --keep) E2E_KEEP=1; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) e2e_die "unknown argument '$1' (see --help)" ;;
    esac
done
[ -n "$daemon" ] || e2e_die "--daemon BIN is required"
configs=${configs:-$ALL_CONFIGS}
for c in $configs; do
    case " $ALL_CONFIGS $EXTRA_CONFIGS " in *" $c "*) ;; *) e2e_die "unknown config '$c' (one of: $ALL_CONFIGS $EXTRA_CONFIGS)" ;; esac
done
e2e_require "$daemon"
[ -z "$reference" ] || e2e_require "$reference"
e2e_tmp
e2e_build_initramfs

# config NAME -> daemon -o options, device properties, guest check flags
config_daemon_opts() {
    case "$1" in
        auto|mq4|fd-limit|readme|queue-mismatch) echo "cache=auto" ;;
        none) echo "cache=none" ;;
        none-nokillpriv) echo "cache=none,no_killpriv_v2" ;;
        always-writeback) echo "cache=always,writeback" ;;
        xattr) echo "cache=auto,xattr" ;;
        xattrmap) echo "cache=auto,xattrmap=:prefix:all::user.virtiofs.::bad:all:::" ;;
        locks) echo "cache=auto,posix_lock,flock" ;;
    esac
}
# The user the idmap-user daemon runs as, and the first of its subordinate ids.
IDMAP_USER=1000
subordinate_base() { # FILE -> first subordinate id of IDMAP_USER's name, or nothing
    local name
    name=$(getent passwd "$IDMAP_USER" | cut -d: -f1)
    [ -n "$name" ] && awk -F: -v n="$name" '$1 == n && $3 >= 65536 { print $2; exit }' "$1" 2>/dev/null
}
SUB_UID=$(subordinate_base /etc/subuid)
SUB_GID=$(subordinate_base /etc/subgid)
# host_id CONFIG KIND GUEST_ID -> the host id a guest uid/gid (KIND u or g) lands as.
host_id() {
    case "$1" in
        idmap|translate) echo $((100000 + $3)) ;;
        idmap-user)
            local base=$SUB_UID
            [ "$2" = g ] && base=$SUB_GID
            if [ "$3" = 0 ]; then echo "$IDMAP_USER"; else echo $((base + $3 - 1)); fi ;;
        *) echo "$3" ;;
    esac
}
# The README's recipe: the daemon's options (less socket and directory, which the rig
# gives) and the request-queue count of its QEMU device line.
README=$(dirname "$0")/../../README.md
readme_daemon_args() {
    grep -m1 '^virtiofsd --socket-path' "$README" | tr ' ' '\n' \
        | grep -v -e '^virtiofsd$' -e '^--socket-path=' -e '^--shared-dir=' | tr '\n' ' '
}
readme_device() { grep -m1 -e '-device vhost-user-fs-pci,' "$README" | grep -o 'num-request-queues=[0-9]*'; }
# Long options beyond -o.
config_daemon_args() {
    case "$1" in
        idmap) echo "--uid-map=:0:100000:65536: --gid-map=:0:100000:65536:" ;;
        idmap-user) echo "--uid-map=:0:$IDMAP_USER:1: --uid-map=:1:$SUB_UID:65536:" \
                         "--gid-map=:0:$IDMAP_USER:1: --gid-map=:1:$SUB_GID:65536: --sandbox=namespace" ;;
        translate) echo "--translate-uid=map:0:100000:65536 --translate-gid=map:0:100000:65536" ;;
        readme) readme_daemon_args ;;
        queue-mismatch) echo "--num-request-queues=1" ;;
    esac
}
config_device() {
    case "$1" in
        mq4) echo "num-request-queues=4" ;;
        readme|queue-mismatch) readme_device ;;
    esac
}
# The queues the guest must start: hiprio and each request queue of the device.
config_queues() {
    local n
    n=$(config_device "$1" | grep -o '[0-9]*$')
    seq 0 "${n:-1}" | tr '\n' ' '
}
config_checks() {
    case "$1" in
        none|none-nokillpriv) echo "--cache=none" ;;
        always-writeback) echo "--cache=always" ;;
        xattr) echo "--cache=auto,--xattr" ;;
        xattrmap) echo "--cache=auto,--xattrmap" ;;
        locks) echo "--cache=auto,--locks" ;;
        fd-limit) echo "--cache=auto,--big-tree=$((BIG_TREE_DIRS * 1000))" ;;
        *) echo "--cache=auto" ;;
    esac
}

# Host-side verification of what the guest left in for-host/. Prints CHECK lines.
host_check() { # name status detail
    echo "CHECK host_$1 $2 ${3:--}"
}
verify_host() {
    local d=$1/for-host config=$2
    if [ ! -d "$d" ]; then host_check for_host_dir FAIL "for-host/ missing"; return; fi
    local f=$d/guest-wrote.txt
    local root_ids="$(host_id "$config" u 0):$(host_id "$config" g 0)"
    if [ "$(cat "$f" 2>/dev/null)" = "written by the guest" ] &&
       [ "$(stat -c '%a %u:%g' "$f")" = "640 $(host_id "$config" u 1234):$(host_id "$config" g 5678)" ]; then
        host_check guest_file PASS
    else
        host_check guest_file FAIL "content/mode/owner: $(stat -c '%a %u:%g %s' "$f" 2>&1)"
    fi
    if [ "$(stat -c '%F %a' "$d/guest-dir" 2>/dev/null)" = "directory 750" ] &&
       [ "$(cat "$d/guest-dir/inner.txt" 2>/dev/null)" = inner ] &&
       [ "$(stat -c '%a %u' "$d/guest-dir/inner.txt")" = "600 $(host_id "$config" u 0)" ]; then
        host_check guest_dir PASS
    else
        host_check guest_dir FAIL "$(stat -c '%F %a' "$d/guest-dir" "$d/guest-dir/inner.txt" 2>&1 | tr '\n' ' ')"
    fi
    [ "$(readlink "$d/guest-symlink" 2>/dev/null)" = guest-wrote.txt ] &&
        host_check symlink PASS || host_check symlink FAIL "readlink: $(readlink "$d/guest-symlink" 2>&1)"
    if [ "$(stat -c %i "$d/guest-hardlink" 2>/dev/null)" = "$(stat -c %i "$f" 2>/dev/null)" ] &&
       [ "$(stat -c %h "$f" 2>/dev/null)" = 2 ]; then
        host_check hardlink PASS
    else
        host_check hardlink FAIL "inodes/nlink differ"
    fi
    if [ "$(cat "$d/after-rename.txt" 2>/dev/null)" = renamed ] && [ ! -e "$d/before-rename.txt" ]; then
        host_check rename PASS
    else
        host_check rename FAIL "after-rename.txt missing or old name left"
    fi
    [ ! -e "$d/removed.txt" ] && host_check unlink PASS || host_check unlink FAIL "removed.txt still on the host"
    [ -p "$d/fifo" ] && [ "$(stat -c %a "$d/fifo")" = 640 ] &&
        host_check fifo PASS || host_check fifo FAIL "$(stat -c '%F %a' "$d/fifo" 2>&1)"
    [ "$(stat -c %Y "$d/dated.txt" 2>/dev/null)" = 1234567890 ] &&
        host_check mtime PASS || host_check mtime FAIL "mtime $(stat -c %Y "$d/dated.txt" 2>&1)"
    [ "$(cat "$d/truncated.txt" 2>/dev/null)" = 0123 ] && [ "$(stat -c %s "$d/truncated.txt")" = 4 ] &&
        host_check truncate PASS || host_check truncate FAIL "$(stat -c %s "$d/truncated.txt" 2>&1) bytes"
    # Files the guest's root created belong to root on the host (credentials pass through),
    # or to the id root is mapped or translated to.
    [ "$(stat -c %u:%g "$d/after-rename.txt" 2>/dev/null)" = "$root_ids" ] &&
        host_check owner_root PASS || host_check owner_root FAIL "owner $(stat -c %u:%g "$d/after-rename.txt" 2>&1)"
    if [ -f "$d/big.bin" ] && cmp -s <("$CHECKS_HOST" --pattern 8388608) "$d/big.bin"; then
        host_check big_file PASS
    else
        host_check big_file FAIL "big.bin differs from the pattern ($(stat -c %s "$d/big.bin" 2>&1) bytes)"
    fi
    local n
    n=$(find "$d/many" -type f 2>/dev/null | wc -l)
    [ "$n" = 1000 ] && [ "$(cat "$d/many/f0777" 2>/dev/null)" = 777 ] &&
        host_check many_files PASS || host_check many_files FAIL "$n files"
    if [ "$config" = xattrmap ]; then
        # The guest's trusted.overlay.x lives on the host under the prefix, and only there.
        local m=$d/mapped.txt mv
        mv=$(getfattr --only-values -n user.virtiofs.trusted.overlay.x "$m" 2>/dev/null)
        if [ "$mv" = 1 ] && ! getfattr -n trusted.overlay.x "$m" >/dev/null 2>&1; then
            host_check xattrmap_prefixed PASS
        else
            host_check xattrmap_prefixed FAIL "user.virtiofs.trusted.overlay.x='$mv'; $(getfattr -d -m - "$m" 2>&1 | tr '\n' ' ')"
        fi
    fi
    if [ "$config" = xattr ]; then
        local v
        v=$(getfattr --only-values -n user.guest.note "$f" 2>/dev/null)
        [ "$v" = from-guest ] && host_check xattr PASS || host_check xattr FAIL "user.guest.note='$v'"
    fi
}

# run_config LABEL BIN CONFIG -> $E2E_TMP/LABEL.CONFIG.results, lines "name STATUS detail"
run_config() {
    local label=$1 bin=$2 config=$3
    local base=$E2E_TMP/$label.$config
    local results=$base.results shared=$base.shared sock=$base.sock console=$base.console
    : >"$results"
    if [ "$config" = queue-mismatch ]; then
        run_mismatch "$label" "$bin" "$base" "$results"
        return
    fi
    if [ "$config" != auto ] && [ -n "$(config_device "$config")" ] && ! e2e_daemon_supports_mq "$bin"; then
        echo "boot N/A this daemon has a single request queue (QEMU's C virtiofsd)" >>"$results"
        return
    fi
    if [ "$config" = idmap-user ]; then
        if [ -z "$SUB_UID" ] || [ -z "$SUB_GID" ] || ! command -v newuidmap >/dev/null; then
            echo "boot N/A needs newuidmap (package uidmap) and 65536 subordinate ids for uid $IDMAP_USER in /etc/subuid and /etc/subgid" >>"$results"
            return
        fi
        # The unprivileged daemon must reach the share and create its socket.
        chmod 0711 "$E2E_TMP"
        mkdir -p "$base.run"
        chown "$IDMAP_USER:$IDMAP_USER" "$base.run"
        sock=$base.run/sock
    fi
    e2e_populate_shared "$shared"
    case "$config" in
        # The guest's root must own its share, as an administrator would arrange.
        idmap|idmap-user|translate) chown -R "$(host_id "$config" u 0):$(host_id "$config" g 0)" "$shared"
                                    chmod 04755 "$shared/suid-file" ;;
    esac
    if [ "$config" = fd-limit ]; then
        local i
        for i in $(seq -w 0 $((BIG_TREE_DIRS - 1))); do
            mkdir -p "$shared/big/d$i"
            (cd "$shared/big/d$i" && touch f{0000..0999})
        done
    fi
    local start=$SECONDS
    local E2E_DAEMON_PREFIX=""
    [ "$config" = fd-limit ] && E2E_DAEMON_PREFIX="prlimit --nofile=$FD_LIMIT:$FD_LIMIT"
    [ "$config" = idmap-user ] && E2E_DAEMON_PREFIX="setpriv --reuid=$IDMAP_USER --regid=$IDMAP_USER --clear-groups"
    if ! e2e_start_daemon "$bin" "$sock" "$shared" "$(config_daemon_opts "$config")" "$base.daemon.log" "$(config_daemon_args "$config")"; then
        echo "boot FAIL daemon did not start: $(tail -n 1 "$base.daemon.log")" >>"$results"
        e2e_stop_daemon
        return
    fi
    local tag=e2efs
    local append="e2e.tag=$tag e2e.args=$(config_checks "$config")"
    e2e_start_replacer "$shared"
    local replacer=$REPLACER_PID
    local rc=0
    e2e_boot "$sock" "$tag" "$append" "$console" "$(config_device "$config")" || rc=$?
    kill "$replacer" 2>/dev/null
    wait "$replacer" 2>/dev/null
    e2e_stop_daemon
    local secs=$((SECONDS - start))
    echo "$secs" >"$base.seconds"
    local qemu_err=$console.qemu
    tr -d '\r' <"$console" >"$console.txt"
    console=$console.txt
    if ! grep -a -q 'E2E MOUNTED' "$console"; then
        local why
        why=$(grep -a -h -m1 -E 'E2E (MOUNT_FAIL|MODULE_FAIL)|qemu-system|Kernel panic' "$console" "$qemu_err" | head -n 1)
        [ "$rc" = 124 ] && why="timed out after ${BOOT_TIMEOUT}s${why:+; $why}"
        [ -n "$DAEMON_DIED" ] && why="daemon exited under the running guest: $(tail -n 1 "$base.daemon.log")"
        echo "boot FAIL ${why:-guest did not mount (qemu exit $rc)}" >>"$results"
        return
    fi
    echo "boot PASS ${secs}s" >>"$results"
    grep -a -o 'CHECK [a-z0-9_]* [A-Z]* .*' "$console" | sed 's/^CHECK //' >>"$results"
    case "$config" in
        # The host kernel keeps setuid on a write only for a writer with CAP_FSETID in
        # its initial user namespace: from any other, even as the file's owner, it clears it.
        idmap|idmap-user)
            sed -i 's/^suid_kept_root_write FAIL .*/suid_kept_root_write SKIP the host kernel clears setuid on every write from a user namespace/' "$results" ;;
    esac
    if [ -n "$DAEMON_DIED" ]; then
        echo "daemon_alive FAIL daemon exited under the running guest: $(tail -n 1 "$base.daemon.log")" >>"$results"
    fi
    if ! grep -a -q 'E2E CHECKS_EXIT' "$console"; then
        echo "checks_complete FAIL the check program did not finish (qemu exit $rc, $(grep -a -c '^CHECK' "$console") lines)" >>"$results"
    fi
    if grep -a -q 'E2E UMOUNT_FAIL' "$console"; then
        echo "umount FAIL umount /mnt failed in the guest" >>"$results"
    fi
    verify_host "$shared" "$config" | sed 's/^CHECK //' >>"$results"
    # Our daemon says at info level which queues the frontend started; the guest
    # driver must have started the hiprio queue and every request queue.
    if e2e_daemon_supports_mq "$bin"; then
        local want q missing=""
        want=$(config_queues "$config")
        for q in $want; do grep -a -q "queue $q started" "$base.daemon.log" || missing="$missing $q"; done
        [ -z "$missing" ] && echo "queues_started PASS $want" >>"$results" \
            || echo "queues_started FAIL queue(s)$missing never started" >>"$results"
    fi
    # The daemon must survive the whole session and end cleanly: on its own with
    # status 0 when QEMU disconnects, or at the latest on SIGTERM.
    case "$DAEMON_EXIT" in
        0|stopped) echo "daemon_exit PASS ${DAEMON_EXIT_NOTE:-exited 0}" >>"$results" ;;
        *) echo "daemon_exit FAIL status $DAEMON_EXIT ${DAEMON_EXIT_NOTE}: $(tail -n 1 "$base.daemon.log")" >>"$results" ;;
    esac
}

# queue-mismatch: QEMU must not start, and the daemon must say what to change and exit 1.
run_mismatch() {
    local label=$1 bin=$2 base=$3 results=$4
    local shared=$base.shared sock=$base.sock console=$base.console
    if ! e2e_daemon_supports_mq "$bin"; then
        echo "boot N/A this daemon has a single request queue (QEMU's C virtiofsd)" >>"$results"
        return
    fi
    e2e_populate_shared "$shared"
    if ! e2e_start_daemon "$bin" "$sock" "$shared" "cache=auto" "$base.daemon.log" "$(config_daemon_args queue-mismatch)"; then
        echo "daemon_start FAIL $(tail -n 1 "$base.daemon.log")" >>"$results"
        e2e_stop_daemon
        return
    fi
    local rc=0
    e2e_boot "$sock" e2efs "e2e.tag=e2efs" "$console" "$(config_device queue-mismatch)" || rc=$?
    e2e_stop_daemon
    tr -d '\r' <"$console" >"$console.txt"
    # What QEMU does is its own business and depends on timing: it sets the queues up
    # one after another, the daemon refuses at the first past its offer, and QEMU 7.2
    # may exit, or go on with a guest that did or did not mount through the first
    # queue. Recorded, not judged; the daemon's side is checked below.
    local mounted=no
    grep -a -q 'E2E MOUNTED' "$console.txt" && mounted=yes
    echo "qemu_outcome N/A qemu exit $rc, guest mounted: $mounted" >>"$results"
    if grep -q 'the frontend uses more request queues than offered' "$base.daemon.log"; then
        echo "advice_logged PASS $(grep -m1 -o 'start the daemon with --num-request-queues=N' "$base.daemon.log")" >>"$results"
    else
        echo "advice_logged FAIL $(tail -n 1 "$base.daemon.log")" >>"$results"
    fi
    [ "$DAEMON_EXIT" = 1 ] && echo "daemon_exit PASS exited 1" >>"$results" \
        || echo "daemon_exit FAIL status $DAEMON_EXIT (expected 1) $DAEMON_EXIT_NOTE" >>"$results"
}

# Counts of a results file: "passed failed skipped na".
count_results() {
    awk '{ if ($2=="PASS") p++; else if ($2=="FAIL") f++; else if ($2=="SKIP") s++; else if ($2=="N/A") n++ }
         END { printf "%d %d %d %d\n", p, f, s, n }' "$1"
}

total_pass=0 total_fail=0 ref_pass=0 ref_fail=0
t0=$SECONDS
for config in $configs; do
    echo "== $config: -o $(config_daemon_opts "$config") $(config_daemon_args "$config")$( [ -n "$(config_device "$config")" ] && echo ", device $(config_device "$config")")"
    run_config ours "$daemon" "$config"
    ours=$E2E_TMP/ours.$config.results
    if [ -n "$reference" ]; then
        run_config ref "$reference" "$config"
        refr=$E2E_TMP/ref.$config.results
        printf '  %-28s %-6s %-9s %s\n' check ours reference detail
        # Union of check names, in the order they ran.
        awk '{print $1}' "$ours" "$refr" | awk '!seen[$0]++' | while read -r name; do
            o=$(awk -v n="$name" '$1==n {print $2; exit}' "$ours")
            r=$(awk -v n="$name" '$1==n {print $2; exit}' "$refr")
            d=$(awk -v n="$name" '$1==n {$1=$2=""; sub(/^  /,""); print; exit}' "$ours")
            [ "${o:-}" = "PASS" ] && [ "${r:-}" != "FAIL" ] && d=""
            [ -z "$o" ] && d="(not run here)"
            mark=""
            [ "${o:-}" = FAIL ] && [ "${r:-}" = PASS ] && mark="  <-- passes on the reference"
            printf '  %-28s %-6s %-9s %s%s\n' "$name" "${o:--}" "${r:--}" "$d" "$mark"
        done
        read -r p f s n < <(count_results "$ours")
        read -r rp rf rs rn < <(count_results "$refr")
        echo "  $config: ours $p passed, $f failed$( [ "$s" != 0 ] && echo ", $s skipped")$( [ "$n" != 0 ] && echo ", n/a")" \
             "($(cat "$E2E_TMP/ours.$config.seconds" 2>/dev/null || echo 0)s) |" \
             "reference $rp passed, $rf failed$( [ "$rs" != 0 ] && echo ", $rs skipped")$( [ "$rn" != 0 ] && echo ", n/a")" \
             "($(cat "$E2E_TMP/ref.$config.seconds" 2>/dev/null || echo 0)s)"
        ref_pass=$((ref_pass + rp)); ref_fail=$((ref_fail + rf))
    else
        while read -r name status d; do
            [ "$status" = PASS ] && d=""
            printf '  %-28s %-6s %s\n' "$name" "$status" "$d"
        done <"$ours"
        read -r p f s n < <(count_results "$ours")
        echo "  $config: $p passed, $f failed$( [ "$s" != 0 ] && echo ", $s skipped")$( [ "$n" != 0 ] && echo ", n/a")" \
             "($(cat "$E2E_TMP/ours.$config.seconds" 2>/dev/null || echo 0)s)"
    fi
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
done
echo
[ -n "$reference" ] && echo "reference ($reference): $ref_pass passed, $ref_fail failed"
echo "overall ($daemon): $total_pass passed, $total_fail failed in $((SECONDS - t0))s"
[ "$total_fail" = 0 ]
