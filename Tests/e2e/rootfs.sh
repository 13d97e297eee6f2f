#!/usr/bin/env bash
# Boot a guest whose root file system is a whole Debian tree served by the daemon.
#
#   Tests/e2e/rootfs.sh --daemon BIN [--keep]
#
# The first run builds a minimal Debian bookworm tree with debootstrap (minbase) from
# the Debian mirror this machine's apt sources name, cached under .build/e2e/rootfs.
# The guest boots with `root=TAG rootfstype=virtiofs rw`, switches into that tree, runs
# Debian's own shell and `dpkg -l | head`, creates, renames and removes files, and
# powers off; the host then checks the markers it left. Exits 0 when all checks pass.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

e2e_daemon_arguments '2,10p' "$@"

cache_dir="${E2E_BUILD_DIR:-$REPO_ROOT/.build/e2e}"
rootfs=$cache_dir/rootfs
suite=${E2E_SUITE:-bookworm}

# The Debian mirror apt already uses here (deb822 .sources or one-line sources.list).
debian_mirror() {
    local m
    m=$(grep -h -A3 -E '^Types:.*deb' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -E '^URIs:' | awk '{print $2}' | grep -E '/debian/?$' | head -n 1)
    [ -n "$m" ] || m=$(grep -h -E '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '{for (i=2;i<=NF;i++) if ($i ~ /^(https?|file):/) {print $i; exit}}' | grep -E '/debian/?$' | head -n 1)
    echo "${m:-http://deb.debian.org/debian}"
}

if [ ! -e "$cache_dir/rootfs.done" ]; then
    command -v debootstrap >/dev/null || e2e_die "debootstrap is not installed (apt-get install debootstrap)"
    mirror=${E2E_MIRROR:-$(debian_mirror)}
    echo "rootfs: building a minimal Debian $suite tree from $mirror (once; cached in $rootfs)"
    rm -rf "$rootfs" "$cache_dir/rootfs.partial"
    mkdir -p "$cache_dir"
    if ! debootstrap --variant=minbase "$suite" "$cache_dir/rootfs.partial" "$mirror" >"$cache_dir/debootstrap.log" 2>&1; then
        echo "rootfs: debootstrap could not build the tree from $mirror." >&2
        echo "rootfs: is the mirror reachable from here? Last lines of $cache_dir/debootstrap.log:" >&2
        tail -n 5 "$cache_dir/debootstrap.log" | sed 's/^/    /' >&2
        rm -rf "$cache_dir/rootfs.partial"
        exit 2
    fi
    mv "$cache_dir/rootfs.partial" "$rootfs"
    touch "$cache_dir/rootfs.done"
fi

e2e_tmp
e2e_build_initramfs
markers=$rootfs/root/e2e-markers
rm -rf "$markers"

# Runs in the guest under Debian's /bin/sh once the tree is the root.
guest_cmd='echo "E2E ROOTFS_SHELL $(readlink /proc/$$/exe) debian $(cat /etc/debian_version)"
echo "E2E DPKG_BEGIN"; dpkg -l | head; echo "E2E DPKG_END"
m=/root/e2e-markers
mkdir -p $m
echo "created in the guest" > $m/created.txt
echo "about to move" > $m/to-rename
mv $m/to-rename $m/renamed.txt
echo "short-lived" > $m/to-remove
rm $m/to-remove
dpkg -l | grep -c "^ii" > $m/dpkg-count
echo "E2E ROOTFS_DONE"'

tag=rootfs
sock=$E2E_TMP/rootfs.sock
console=$E2E_TMP/console
echo "rootfs: sharing $rootfs with $daemon, booting the guest (root=$tag rootfstype=virtiofs rw)"
start=$SECONDS
if ! e2e_start_daemon "$daemon" "$sock" "$rootfs" "cache=auto" "$E2E_TMP/daemon.log"; then
    echo "rootfs: the daemon did not start: $(tail -n 1 "$E2E_TMP/daemon.log")" >&2
    exit 1
fi
rc=0
e2e_boot "$sock" "$tag" "root=$tag rootfstype=virtiofs rw e2e.cmd=$(e2e_b64 "$guest_cmd")" "$console" || rc=$?
e2e_stop_daemon
tr -d '\r' <"$console" >"$console.txt"
secs=$((SECONDS - start))

pass=0 fail=0
check() { # name ok(0/1) detail
    if [ "$2" = 0 ]; then pass=$((pass + 1)); printf '  %-22s PASS\n' "$1"
    else fail=$((fail + 1)); printf '  %-22s FAIL %s\n' "$1" "$3"; fi
}
c=$console.txt
grep -a -q 'E2E ROOT_MOUNTED' "$c"; check root_mounted $? "guest could not mount $tag as root (qemu exit $rc): $(grep -a -m1 -E 'E2E|panic' "$c")"
grep -a -q 'E2E ROOTFS_SHELL' "$c"; check debian_shell $? "Debian's shell never ran"
sed -n '/E2E DPKG_BEGIN/,/E2E DPKG_END/p' "$c" | grep -a -q '^ii '; check dpkg_list $? "dpkg -l printed no packages"
grep -a -q 'E2E ROOTFS_DONE' "$c"; check guest_script_done $? "the guest script did not finish"
grep -a -q 'E2E POWEROFF' "$c"; check poweroff $? "no clean power-off (qemu exit $rc)"
[ "$(cat "$markers/created.txt" 2>/dev/null)" = "created in the guest" ]; check host_created $? "created.txt missing"
[ -f "$markers/renamed.txt" ] && [ ! -e "$markers/to-rename" ]; check host_renamed $? "rename not visible on the host"
[ ! -e "$markers/to-remove" ]; check host_removed $? "to-remove still on the host"
want=$(dpkg --root="$rootfs" -l 2>/dev/null | grep -c '^ii')
got=$(cat "$markers/dpkg-count" 2>/dev/null)
[ -n "$got" ] && [ "$got" = "$want" ]; check host_dpkg_count $? "guest counted '${got}' packages, host $want"

grep -a -m1 'E2E ROOTFS_SHELL' "$c" | sed 's/^E2E ROOTFS_SHELL/  guest shell:/'
echo "  guest's dpkg -l | head:"
sed -n '/E2E DPKG_BEGIN/,/E2E DPKG_END/p' "$c" | sed '1d;$d' | sed 's/^/    | /'
echo "rootfs: $pass passed, $fail failed (${secs}s)"
[ -n "${E2E_KEEP:-}" ] && echo "rootfs: kept $E2E_TMP"
[ "$fail" = 0 ]
