#!/usr/bin/env bash
# End to end through libvirt 11 (Debian 13's), two runs:
#   session  an unprivileged user's libvirt launches the daemon for a transient TCG
#            domain and passes it two user-namespace ranges per map, its own id and its
#            subordinate ids: --uid-map=:0:1000:1: --uid-map=:1:100000:65536: (and gids)
#   system   the root libvirtd launches it as root for a domain with <idmap> (0 to
#            100000, 65536 ids): --uid-map=:0:100000:65536: (and gids)
# The guest reads a file the host put in the share, writes a marker as root and
# hands a directory to its user 1234; on the host the marker must belong to the id the
# guest's root is mapped to and the directory to the id 1234 is mapped to, and the
# guest must power off (a daemon that dies under it leaves it hanging).
#
#   Tests/e2e/libvirt11.sh --daemon BIN [--mode session|system|both] [--timeout SECONDS] [--keep]
#   Tests/e2e/libvirt11.sh --tree-daemon PATH ...   a daemon inside the tree, e.g.
#                                                   /usr/libexec/virtiofsd (Debian 13's Rust one)
#
# Needs root (to build and enter the rig): libvirt 11 runs in a Debian 13 tree (built
# once with debootstrap from the Debian mirror apt uses; LIBVIRT11_TREE overrides its
# place, and an existing minimal Debian 13 tree in DEBIAN13_TREE is copied instead of
# bootstrapping), in its own mount and PID namespaces with a private /run, as the
# tree's user "e2e" (uid 1000, subordinate ids 100000-165535) or as root with the
# tree's virtlogd and libvirtd (QEMU as root, no cgroups or security driver). The tree is entered
# with pivot_root, not chroot: the kernel refuses a new user namespace to a chrooted
# process, and the unprivileged daemon needs one. The daemon binary runs inside with
# its own copy of the libraries it was linked against that the tree lacks.
# Prints "N passed, N failed"; exits 1 if anything failed, 2 on usage or rig errors.
set -u

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TREE=${LIBVIRT11_TREE:-/var/tmp/debian13-libvirt11}
BASE_TREE=${DEBIAN13_TREE:-}
KERNEL=${E2E_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
TIMEOUT=${E2E_BOOT_TIMEOUT:-180}
KEEP=${E2E_KEEP:-}
SESSION_USER=e2e
SESSION_UID=1000
SUB_BASE=100000
PACKAGES="libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86 uidmap util-linux"

DAEMON="" TREE_DAEMON="" MODES="session system"
usage() { echo "usage: $0 --daemon BIN | --tree-daemon PATH [--mode session|system|both] [--timeout SECONDS] [--keep]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --daemon) [ $# -ge 2 ] || usage; DAEMON=$2; shift 2 ;;
        --daemon=*) DAEMON=${1#*=}; shift ;;
        --tree-daemon) [ $# -ge 2 ] || usage; TREE_DAEMON=$2; shift 2 ;;
        --mode) [ $# -ge 2 ] || usage
                case "$2" in session|system) MODES=$2 ;; both) MODES="session system" ;; *) usage ;; esac
                shift 2 ;;
        --timeout) [ $# -ge 2 ] || usage; TIMEOUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        *) usage ;;
    esac
done
die() { echo "libvirt11.sh: $*" >&2; exit 2; }
[ -n "$DAEMON" ] || [ -n "$TREE_DAEMON" ] || usage
if [ -n "$DAEMON" ]; then
    [ -x "$DAEMON" ] || die "daemon binary '$DAEMON' not found or not executable (build it first: make release)"
    DAEMON=$(realpath "$DAEMON")
fi
[ "$(id -u)" = 0 ] || die "must run as root (to build and enter the Debian 13 rig)"
[ -r "$KERNEL" ] || die "no guest kernel in /boot (install linux-image-amd64)"
case "$TIMEOUT" in ''|*[!0-9]*) die "--timeout wants whole seconds" ;; esac

source "$(dirname "$0")/libvirt-common.sh"

# ------------------------------------------------------------ the rig

# Runs a command chrooted in TREE with /proc, /dev and /sys, in a private mount
# namespace so nothing stays mounted (package installation only).
in_tree_chroot() {
    unshare -m --propagation private sh -c '
        t=$1; shift
        mount --bind /proc "$t/proc" && mount --rbind /dev "$t/dev" && mount --rbind /sys "$t/sys" &&
        exec chroot "$t" /usr/bin/env DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"' sh "$TREE.partial" "$@"
}

build_tree() {
    [ -x "$TREE/usr/bin/virsh" ] && [ -x "$TREE/usr/bin/newuidmap" ] && return 0
    note "building the libvirt 11 rig in $TREE (once; needs the Debian mirror)"
    rm -rf "$TREE.partial"
    if [ -n "$BASE_TREE" ] && [ -x "$BASE_TREE/usr/bin/apt-get" ]; then
        cp -a "$BASE_TREE" "$TREE.partial" || die "cannot copy $BASE_TREE"
    else
        command -v debootstrap >/dev/null || die "debootstrap is missing (make deps)"
        local mirror
        mirror=$(grep -h -m1 '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -1)
        [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
        debootstrap --variant=minbase trixie "$TREE.partial" "${mirror:-http://deb.debian.org/debian}" >&2 \
            || die "debootstrap of Debian 13 failed"
    fi
    cp /etc/resolv.conf "$TREE.partial/etc/resolv.conf" 2>/dev/null
    # No service may start inside the tree while packages install.
    printf '#!/bin/sh\nexit 101\n' > "$TREE.partial/usr/sbin/policy-rc.d"
    chmod 0755 "$TREE.partial/usr/sbin/policy-rc.d"
    in_tree_chroot apt-get update -qq >&2 || die "apt-get update in the tree failed"
    # shellcheck disable=SC2086
    in_tree_chroot apt-get install -y -qq --no-install-recommends $PACKAGES >&2 || die "installing libvirt in the tree failed"
    mv "$TREE.partial" "$TREE"
}

# The session user with subordinate ids, and the daemon with the libraries the tree lacks.
prepare_tree() {
    if ! grep -q "^$SESSION_USER:" "$TREE/etc/passwd"; then
        echo "$SESSION_USER:x:$SESSION_UID:$SESSION_UID::/home/$SESSION_USER:/bin/sh" >> "$TREE/etc/passwd"
        echo "$SESSION_USER:x:$SESSION_UID:" >> "$TREE/etc/group"
    fi
    for f in subuid subgid; do
        grep -q "^$SESSION_USER:" "$TREE/etc/$f" 2>/dev/null || echo "$SESSION_USER:$SUB_BASE:65536" >> "$TREE/etc/$f"
    done
    mkdir -p "$TREE/home/$SESSION_USER"
    chown -R "$SESSION_UID:$SESSION_UID" "$TREE/home/$SESSION_USER"
    # The system instance runs QEMU as root, without cgroups or a security driver:
    # the rig has neither a systemd nor AppArmor of its own.
    if ! grep -q '^# rig settings' "$TREE/etc/libvirt/qemu.conf"; then
        printf '%s\n' '# rig settings' 'user = "+0"' 'group = "+0"' 'security_driver = "none"' \
            'cgroup_controllers = [ ]' >> "$TREE/etc/libvirt/qemu.conf"
    fi
    [ -n "$DAEMON" ] || return 0
    local dir=$TREE/opt/swift-virtiofsd lib
    rm -rf "$dir"
    mkdir -p "$dir/lib"
    cp "$DAEMON" "$dir/virtiofsd.bin"
    # Libraries the binary links that the tree does not have under the same name.
    for lib in $(ldd "$DAEMON" | awk '$2 == "=>" && $3 ~ /^\// { print $1 ":" $3 }'); do
        [ -e "$TREE/usr/lib/x86_64-linux-gnu/${lib%%:*}" ] || [ -e "$TREE/lib/x86_64-linux-gnu/${lib%%:*}" ] ||
            cp -L "${lib#*:}" "$dir/lib/${lib%%:*}"
    done
    cat > "$dir/virtiofsd" <<'EOF'
#!/bin/sh
LD_LIBRARY_PATH=/opt/swift-virtiofsd/lib exec /opt/swift-virtiofsd/virtiofsd.bin "$@"
EOF
    chmod -R a+rX "$dir"
    chmod 0755 "$dir/virtiofsd" "$dir/virtiofsd.bin"
}

# ------------------------------------------------------------ one domain


domain_xml() { # NAME WORK(in-tree path) CMDLINE IDMAP_XML
    local name=$1 work=$2 cmdline=$3 idmap=$4
    cat <<EOF
<domain type='qemu'>
  <name>$(xml "$name")</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$work/vmlinuz</kernel>
    <initrd>$work/initrd.gz</initrd>
    <cmdline>$(xml "$cmdline")</cmdline>
  </os>
  <features><acpi/></features>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs'/>
      <binary path='$(xml "$BINARY")'/>$idmap
      <source dir='$work/share'/>
      <target dir='e2esession'/>
    </filesystem>
    <serial type='file'>
      <source path='$work/console.log'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# What the session user runs inside the rig: create the domain, wait for it to end,
# keep libvirt's logs.
session_script() { # NAME WORK TIMEOUT MODE
    local uri=qemu:///session logs='$HOME/.cache/libvirt/qemu/log' start=""
    if [ "$4" = system ]; then
        uri=qemu:///system logs=/var/log/libvirt/qemu
        start='mkdir -p /run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt/qemu
virtlogd -d && libvirtd -d || { echo LIBVIRTD_FAILED; exit 0; }
i=0; while [ ! -S /run/libvirt/libvirt-sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done'
    fi
    cat <<EOF
#!/bin/sh
cd "$2"
$start
keep_logs() {
    cp "$logs/$1.log" "$2/domain.log" 2>/dev/null
    cp "$logs/$1-fs0-virtiofsd.log" "$2/virtiofsd.log" 2>/dev/null
}
if ! virsh -q -c $uri create "$2/domain.xml" > "$2/virsh.out" 2>&1; then
    echo CREATE_FAILED
    keep_logs
    exit 0
fi
echo CREATED
i=0
while virsh -q -c $uri domid "$1" >/dev/null 2>&1; do
    i=\$((i + 1))
    if [ \$i -gt $(($3 * 2)) ]; then echo TIMED_OUT; virsh -q -c $uri destroy "$1" >/dev/null 2>&1; break; fi
    sleep 0.5
done
echo "ENDED \$((i / 2))"
keep_logs
exit 0
EOF
}

# Enters the rig (new mount and PID namespaces, pivot_root into the tree, private
# /run and /tmp) and runs SCRIPT (an in-tree path) as the session user.
run_in_rig() { # SCRIPT UID
    unshare --mount --pid --fork --propagation private /bin/sh -c '
        set -e
        t=$1 script=$2 uid=$3
        mount --bind "$t" "$t"
        mount -t proc proc "$t/proc"
        mount --rbind /dev "$t/dev"
        mount --rbind /sys "$t/sys"
        mount -t tmpfs -o mode=0755 tmpfs "$t/run"
        mount -t tmpfs -o mode=1777 tmpfs "$t/tmp"
        mkdir -p "$t/.old-root"
        cd "$t"
        pivot_root . .old-root
        cd /
        umount -l /.old-root
        mkdir -p /run/user/$uid
        chown $uid:$uid /run/user/$uid
        chmod 0700 /run/user/$uid
        if [ "$uid" = 0 ]; then
            exec /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin:/usr/sbin:/sbin /bin/sh "$script"
        fi
        exec setpriv --reuid=$uid --regid=$uid --init-groups /usr/bin/env -i HOME=/home/e2e USER=e2e LOGNAME=e2e \
            XDG_RUNTIME_DIR=/run/user/$uid PATH=/usr/bin:/bin:/usr/sbin:/sbin /bin/sh "$script"' \
        sh "$TREE" "$1" "$2"
}

# ------------------------------------------------------------ main

build_tree
prepare_tree
BINARY=/opt/swift-virtiofsd/virtiofsd
if [ -n "$TREE_DAEMON" ]; then
    [ -x "$TREE/$TREE_DAEMON" ] || die "no $TREE_DAEMON in $TREE"
    BINARY=$TREE_DAEMON
fi
initrd=$("$E2E_DIR/build-initramfs.sh") || die "could not build the guest initramfs"
WORKS=()
cleanup() {
    local w
    for w in "${WORKS[@]}"; do
        if [ -z "$KEEP" ]; then rm -rf "$w"; else echo "kept $w"; fi
    done
}
trap cleanup EXIT

# run_mode session|system: one domain; records pass/fail for each step.
run_mode() {
    local mode=$1 rel uid owner_root owner_1234 idmap="" maps name out launched console
    rel=var/tmp/libvirt11-e2e.$$.$mode
    local work=$TREE/$rel
    WORKS+=("$work")
    if [ "$mode" = session ]; then
        uid=$SESSION_UID
        owner_root=$SESSION_UID
        owner_1234=$((SUB_BASE + 1234 - 1))
        maps="--uid-map=:0:$SESSION_UID:1: --uid-map=:1:$SUB_BASE:65536:"
    else
        uid=0
        owner_root=$SUB_BASE
        owner_1234=$((SUB_BASE + 1234))
        maps="--uid-map=:0:$SUB_BASE:65536: --gid-map=:0:$SUB_BASE:65536:"
        idmap="
      <idmap>
        <uid start='0' target='$SUB_BASE' count='65536'/>
        <gid start='0' target='$SUB_BASE' count='65536'/>
      </idmap>"
    fi
    mkdir -p "$work/share"
    cp "$KERNEL" "$work/vmlinuz" && cp "$initrd" "$work/initrd.gz" || die "cannot copy the guest kernel/initramfs"
    chmod 0644 "$work/vmlinuz" "$work/initrd.gz"
    local host_token guest_token cmd cmdline
    host_token=$(token)
    guest_token=$(token)
    printf '%s\n' "$host_token" > "$work/share/from-host.txt"
    chmod 0644 "$work/share/from-host.txt"
    # The files belong to the user the domain runs for; the share to the id its root
    # is mapped to (as libvirt's documentation asks for <idmap>).
    chown -R "$uid:$uid" "$work"
    chown -R "$owner_root:$owner_root" "$work/share"
    name="swift-virtiofsd-$mode-$$"
    cmd="echo \"E2E GUEST_READ \$(cat from-host.txt)\"; echo $guest_token > marker.txt; mkdir user-dir; chown 1234:1234 user-dir; sync"
    cmdline="console=ttyS0 loglevel=3 panic=-1 no_timer_check e2e.tag=e2esession e2e.cmd=$(printf '%s' "$cmd" | base64 -w0)"
    domain_xml "$name" "/$rel" "$cmdline" "$idmap" > "$work/domain.xml"
    session_script "$name" "/$rel" "$TIMEOUT" "$mode" > "$work/session.sh"
    chown "$uid:$uid" "$work/domain.xml" "$work/session.sh"

    note "$mode: libvirt $(chroot "$TREE" virsh --version 2>/dev/null || echo '?') as uid $uid: virsh create ($name)"
    out=$(run_in_rig "/$rel/session.sh" "$uid" 2>&1)
    echo "$out" | sed 's/^/  | /'
    if echo "$out" | grep -q '^CREATED'; then
        pass "$mode: libvirt started the domain"
    else
        fail "$mode: libvirt started the domain: $(tr '\n' ' ' < "$work/virsh.out" 2>/dev/null)"
    fi
    launched=$(awk '/Starting external device: virtiofsd/ { getline; line = $0 } END { print line }' "$work/domain.log" 2>/dev/null)
    note "$mode: libvirt launched: ${launched:-<nothing logged>}"
    if echo "$launched" | grep -q -- "$maps"; then
        pass "$mode: libvirt passed the maps ($maps)"
    else
        fail "$mode: libvirt's daemon command line lacks $maps"
    fi
    if echo "$out" | grep -q '^ENDED' && ! echo "$out" | grep -q '^TIMED_OUT'; then
        pass "$mode: guest powered off and the domain ended ($(echo "$out" | awk '/^ENDED/ {print $2}')s)"
    else
        fail "$mode: domain did not end within ${TIMEOUT}s"
    fi
    console=$work/console.log
    if grep -q "^E2E MOUNTED e2esession" "$console" 2>/dev/null && grep -q '^E2E CMD_EXIT 0' "$console"; then
        pass "$mode: guest mounted the share and ran its command"
    else
        fail "$mode: guest did not mount the share or its command failed"
    fi
    grep -q "^E2E GUEST_READ $host_token" "$console" 2>/dev/null &&
        pass "$mode: guest read the host's file" || fail "$mode: guest did not read the host's file"
    if [ "$(cat "$work/share/marker.txt" 2>/dev/null)" = "$guest_token" ] &&
       [ "$(stat -c %u:%g "$work/share/marker.txt")" = "$owner_root:$owner_root" ]; then
        pass "$mode: the guest root's file is on the host, owned by $owner_root"
    else
        fail "$mode: marker: '$(cat "$work/share/marker.txt" 2>&1)' owner $(stat -c %u:%g "$work/share/marker.txt" 2>&1), want $owner_root"
    fi
    [ "$(stat -c %u:%g "$work/share/user-dir" 2>/dev/null)" = "$owner_1234:$owner_1234" ] &&
        pass "$mode: guest user 1234's directory is host id $owner_1234" ||
        fail "$mode: user-dir owner $(stat -c %u:%g "$work/share/user-dir" 2>&1), want $owner_1234:$owner_1234"
    if [ "$FAILED" != 0 ]; then
        note "$mode: daemon log (last 20 lines)"; tail -n 20 "$work/virtiofsd.log" 2>/dev/null | sed 's/^/  | /'
        note "$mode: domain log (last 10 lines)"; tail -n 10 "$work/domain.log" 2>/dev/null | sed 's/^/  | /'
        note "$mode: guest console (last 15 lines)"; tail -n 15 "$console" 2>/dev/null | sed 's/^/  | /'
    fi
}

for mode in $MODES; do run_mode "$mode"; done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
