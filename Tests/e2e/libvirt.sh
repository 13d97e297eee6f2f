#!/usr/bin/env bash
# End to end through libvirt: libvirt launches the virtio-fs daemon for a
# transient TCG domain, the guest mounts the share, writes a marker and powers
# off, and we check the marker on the host and the guest's console.
#
#   run 1  <binary path='BIN'> with the options libvirt users set most
#          (xattr, cache, chroot sandbox, posix/flock locks, thread pool)
#   run 2  no path: libvirt must find BIN through a vhost-user JSON
#          descriptor, which we install where libvirt looks, named so it
#          sorts before the packaged C daemon's descriptor
#
# Usage: Tests/e2e/libvirt.sh --daemon BIN [--timeout SECONDS] [--keep]
# Needs root. Installs libvirt (Debian: libvirt-daemon-system, libvirt-clients)
# when missing, starts virtlogd/libvirtd when they are not running and stops
# only what it started. Prints "N passed, N failed"; exits 1 if anything failed.
set -u

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_DIR/../.." && pwd)
URI=qemu:///system
VIRSH=(virsh -q -c "$URI")
KERNEL=${E2E_KERNEL:-$(ls /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
TIMEOUT=${E2E_BOOT_TIMEOUT:-120}
KEEP=${E2E_KEEP:-}
LOG_DIR=/var/log/libvirt/qemu
# libvirt reads vhost-user descriptors from these two directories (the second
# wins for equal file names) and tries them in C-locale order of file name.
DESCRIPTOR_DIRS=(/usr/share/qemu/vhost-user /etc/qemu/vhost-user)
DESCRIPTOR_DIR=/etc/qemu/vhost-user
DESCRIPTOR_NAME=00-swift-virtiofsd-e2e.json
PACKAGES=(libvirt-daemon-system libvirt-clients)

DAEMON=""
usage() { echo "usage: $0 --daemon BIN [--timeout SECONDS] [--keep]" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --daemon) [ $# -ge 2 ] || usage; DAEMON=$2; shift 2 ;;
        --daemon=*) DAEMON=${1#*=}; shift ;;
        --timeout) [ $# -ge 2 ] || usage; TIMEOUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        *) usage ;;
    esac
done
die() { echo "libvirt.sh: $*" >&2; exit 2; }
[ -n "$DAEMON" ] || usage
[ -x "$DAEMON" ] || die "daemon binary '$DAEMON' not found or not executable (build it first: make release)"
# libvirt needs an absolute path, and the launched binary is compared with it.
DAEMON=$(realpath "$DAEMON")
[ "$(id -u)" = 0 ] || die "must run as root (libvirt's system instance launches the daemon as root)"
[ -r "$KERNEL" ] || die "no guest kernel in /boot (install linux-image-amd64)"
case "$TIMEOUT" in ''|*[!0-9]*) die "--timeout wants whole seconds" ;; esac

# ------------------------------------------------------------ results

source "$(dirname "$0")/libvirt-common.sh"

# ------------------------------------------------------------ cleanup

TMP=""
DOMAINS=()
STARTED_PIDS=()      # libvirtd/virtlogd we started, newest first
DESCRIPTOR_PATH=""   # the descriptor we installed
MADE_DIRS=()         # directories we created for it, deepest first

cleanup() {
    local name pid
    for name in "${DOMAINS[@]}"; do
        # A transient domain vanishes when it stops; destroy whatever is left.
        if "${VIRSH[@]}" domid "$name" >/dev/null 2>&1; then
            "${VIRSH[@]}" destroy "$name" >/dev/null 2>&1 || true
        fi
        if [ -z "$KEEP" ]; then
            rm -f "$LOG_DIR/$name.log" "$LOG_DIR/$name-fs0-virtiofsd.log"
        fi
    done
    if [ -n "$DESCRIPTOR_PATH" ]; then rm -f "$DESCRIPTOR_PATH"; fi
    for d in "${MADE_DIRS[@]}"; do rmdir "$d" 2>/dev/null || true; done
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 50); do running "$pid" || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ -n "$TMP" ] && [ -z "$KEEP" ]; then rm -rf "$TMP"; fi
    if [ -n "$KEEP" ] && [ -n "$TMP" ]; then echo "kept $TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ libvirt itself

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        # Not `dpkg -s`: it succeeds for a removed package whose config files remain.
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    note "installing ${missing[*]}"
    local log
    log=$(mktemp) || die "mktemp failed"
    # Recommends pull in network and storage tooling this test never uses.
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "could not install ${missing[*]}"
    fi
    rm -f "$log"
}

# running PID: true while PID exists and is not a zombie waiting to be reaped.
running() {
    local state
    state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# pid_alive PIDFILE: true when the pid file names a live process.
pid_alive() {
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 1
    case "$pid" in ''|*[!0-9]*) return 1 ;; esac
    running "$pid"
}

# start_daemon NAME PIDFILE: starts NAME -d (no systemd here) unless it runs,
# and remembers its pid so that cleanup stops it again.
start_daemon() {
    local name=$1 pidfile=$2
    if pid_alive "$pidfile"; then return 0; fi
    note "starting $name"
    "$name" -d || die "$name -d failed"
    for _ in $(seq 1 50); do
        if pid_alive "$pidfile"; then
            STARTED_PIDS=("$(cat "$pidfile")" "${STARTED_PIDS[@]}")
            return 0
        fi
        sleep 0.1
    done
    die "$name did not write $pidfile"
}

ensure_daemons() {
    start_daemon virtlogd /run/virtlogd.pid
    if ! timeout 10 "${VIRSH[@]}" version >/dev/null 2>&1; then
        start_daemon libvirtd /run/libvirtd.pid
    fi
    for _ in $(seq 1 100); do
        timeout 10 "${VIRSH[@]}" version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "libvirtd does not answer on $URI"
}

# ------------------------------------------------------------ guest files

build_guest() {
    local initrd
    initrd=$("$E2E_DIR/build-initramfs.sh") || die "could not build the guest initramfs"
    # QEMU runs as an unprivileged user under libvirt and must be able to read
    # the kernel and initramfs whatever the permissions of the build tree.
    cp "$KERNEL" "$TMP/vmlinuz" && cp "$initrd" "$TMP/initrd.gz" || die "cannot copy the guest kernel/initramfs"
    chmod 0644 "$TMP/vmlinuz" "$TMP/initrd.gz"
}

# Escapes text for an XML attribute or element.

# domain_xml NAME SHARE TAG CONSOLE CMDLINE BINARY_ATTR
# BINARY_ATTR is " path='...'" for run 1 and empty when libvirt must look up the daemon.
domain_xml() {
    local name=$1 share=$2 tag=$3 console=$4 cmdline=$5 binary_attr=$6
    cat <<EOF
<domain type='qemu'>
  <name>$(xml "$name")</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$(xml "$TMP/vmlinuz")</kernel>
    <initrd>$(xml "$TMP/initrd.gz")</initrd>
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
      <binary${binary_attr} xattr='on'>
        <cache mode='always'/>
        <sandbox mode='chroot'/>
        <lock posix='on' flock='on'/>
        <thread_pool size='2'/>
      </binary>
      <source dir='$(xml "$share")'/>
      <target dir='$(xml "$tag")'/>
    </filesystem>
    <serial type='file'>
      <source path='$(xml "$console")'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# The daemon command line libvirt logged in the domain's log just before
# starting it: the line after "Starting external device: virtiofsd".
launched_cmdline() {
    awk '/Starting external device: virtiofsd/ { getline; line = $0 } END { print line }' "$LOG_DIR/$1.log" 2>/dev/null
}

show_logs() {
    local name=$1 console=$2
    note "daemon log ($LOG_DIR/$name-fs0-virtiofsd.log, last 40 lines)"
    tail -n 40 "$LOG_DIR/$name-fs0-virtiofsd.log" 2>/dev/null | sed 's/^/  | /'
    note "guest console (last 30 lines)"
    tail -n 30 "$console" 2>/dev/null | sed 's/^/  | /'
}

# run_domain LABEL BINARY_ATTR: one boot; records pass/fail for each step.
run_domain() {
    local label=$1 binary_attr=$2
    local name="swift-virtiofsd-e2e-$$-$label"
    local share="$TMP/$label-share" console="$TMP/$label-console.log" tag="e2e$label"
    local host_token guest_token cmd cmdline started ended t0 t1 line launched
    mkdir -m 0755 "$share"
    host_token=$(token)
    guest_token=$(token)
    printf '%s\n' "$host_token" > "$share/from-host.txt"
    # The guest shows what it read on the console and leaves its own token in
    # the share; neither token can be satisfied by anything but the daemon.
    cmd="echo \"E2E GUEST_READ \$(cat from-host.txt)\"; echo $guest_token > libvirt-marker.txt; sync"
    cmdline="console=ttyS0 loglevel=3 panic=-1 no_timer_check e2e.tag=$tag e2e.cmd=$(printf '%s' "$cmd" | base64 -w0)"
    domain_xml "$name" "$share" "$tag" "$console" "$cmdline" "$binary_attr" > "$TMP/$label.xml"

    note "$label: virsh create ($name)"
    DOMAINS+=("$name")
    t0=$(now)
    if ! "${VIRSH[@]}" create "$TMP/$label.xml" > "$TMP/$label-virsh.out" 2>&1; then
        fail "$label: libvirt started the domain: $(tr '\n' ' ' < "$TMP/$label-virsh.out")"
        line=$(launched_cmdline "$name")
        note "$label: daemon command line: ${line:-<none logged>}"
        note "domain log ($LOG_DIR/$name.log, last 6 lines)"
        tail -n 6 "$LOG_DIR/$name.log" 2>/dev/null | sed 's/^/  | /'
        show_logs "$name" "$console"
        return
    fi
    started=$(now)
    pass "$label: libvirt started the domain ($(elapsed "$t0" "$started")s)"

    line=$(launched_cmdline "$name")
    note "$label: libvirt launched: ${line:-<nothing logged>}"
    LAUNCHED_LINES+=("$label: $line")
    launched=${line%% *}
    if [ -n "$launched" ] && [ "$(realpath "$launched" 2>/dev/null)" = "$DAEMON" ]; then
        pass "$label: libvirt launched $DAEMON"
    else
        fail "$label: libvirt launched '${launched:-nothing}', want $DAEMON"
    fi

    ended=""
    while :; do
        if ! "${VIRSH[@]}" domid "$name" >/dev/null 2>&1; then ended=$(now); break; fi
        t1=$(now)
        if awk -v a="$t0" -v b="$t1" -v t="$TIMEOUT" 'BEGIN { exit !(b - a > t) }'; then break; fi
        sleep 0.5
    done
    if [ -n "$ended" ]; then
        pass "$label: guest powered off and the domain ended ($(elapsed "$t0" "$ended")s after create)"
        TIMINGS+=("$label: $(elapsed "$t0" "$ended")s from virsh create to domain end")
    else
        fail "$label: domain still running after ${TIMEOUT}s; destroying it"
        "${VIRSH[@]}" destroy "$name" >/dev/null 2>&1 || true
    fi

    if grep -q "^E2E MOUNTED $tag" "$console" 2>/dev/null && grep -q '^E2E CMD_EXIT 0' "$console"; then
        pass "$label: guest mounted tag $tag and ran its command"
    else
        fail "$label: guest did not mount $tag or its command failed (see console)"
    fi
    if grep -q "^E2E GUEST_READ $host_token" "$console" 2>/dev/null; then
        pass "$label: guest read the file the host put in the share"
    else
        fail "$label: guest did not read the host's file back"
    fi
    if [ "$(cat "$share/libvirt-marker.txt" 2>/dev/null)" = "$guest_token" ]; then
        pass "$label: marker written by the guest is on the host"
    else
        fail "$label: marker missing or wrong on the host"
    fi
    show_logs "$name" "$console"
}

# ------------------------------------------------------------ descriptors

# The descriptor libvirt would choose for a virtio-fs device: file names from
# both directories (a later directory replaces an equal name), in C order,
# empty files masking, first with "type": "fs".
first_fs_descriptor() {
    local -A by_name=()
    local dir f base
    for dir in "${DESCRIPTOR_DIRS[@]}"; do
        for f in "$dir"/*; do
            [ -f "$f" ] || continue
            base=${f##*/}
            case "$base" in .*) continue ;; esac
            by_name[$base]=$f
        done
    done
    for base in $(printf '%s\n' "${!by_name[@]}" | LC_ALL=C sort); do
        f=${by_name[$base]}
        [ -s "$f" ] || continue
        if grep -Eq '"type"[[:space:]]*:[[:space:]]*"fs"' "$f"; then echo "$f"; return 0; fi
    done
    return 1
}

install_descriptor() {
    local template="$REPO_ROOT/docs/50-swift-virtiofsd.json.in" escaped d
    for d in /etc/qemu "$DESCRIPTOR_DIR"; do
        if [ ! -d "$d" ]; then mkdir -m 0755 "$d" && MADE_DIRS=("$d" "${MADE_DIRS[@]}") || return 1; fi
    done
    [ -e "$DESCRIPTOR_DIR/$DESCRIPTOR_NAME" ] && { echo "$DESCRIPTOR_DIR/$DESCRIPTOR_NAME exists already" >&2; return 1; }
    DESCRIPTOR_PATH="$DESCRIPTOR_DIR/$DESCRIPTOR_NAME"
    # The project's own template, so the test also proves libvirt accepts it.
    escaped=$(printf '%s' "$DAEMON" | sed 's/[&|\\]/\\&/g')
    sed "s|@BINARY@|$escaped|" "$template" > "$DESCRIPTOR_PATH" || return 1
    chmod 0644 "$DESCRIPTOR_PATH"
}

# ------------------------------------------------------------ main

LAUNCHED_LINES=()
TIMINGS=()
ensure_packages
ensure_daemons
TMP=$(mktemp -d "${TMPDIR:-/tmp}/swift-virtiofsd-libvirt.XXXXXX") || die "mktemp failed"
chmod 0755 "$TMP"
build_guest
note "daemon under test: $DAEMON"
note "$(virsh -c "$URI" version 2>/dev/null | tr '\n' ' ')"

run_domain binarypath " path='$(xml "$DAEMON")'"

if grep -qsF "\"$DAEMON\"" "${DESCRIPTOR_DIRS[0]}"/*.json; then
    note "note: $DAEMON has a packaged descriptor too, so the next run cannot tell which descriptor libvirt used"
fi

note "installing a vhost-user descriptor for $DAEMON"
if install_descriptor; then
    pass "descriptor: installed $DESCRIPTOR_PATH"
    note "$(cat "$DESCRIPTOR_PATH" | tr -s ' \n' ' ')"
    chosen=$(first_fs_descriptor)
    if [ "$chosen" = "$DESCRIPTOR_PATH" ]; then
        pass "descriptor: libvirt's lookup order puts ours before every other fs descriptor"
    else
        fail "descriptor: libvirt would pick '$chosen' before ours"
    fi
    run_domain descriptor ""
else
    fail "descriptor: could not install $DESCRIPTOR_DIR/$DESCRIPTOR_NAME"
fi

note "summary"
for l in "${LAUNCHED_LINES[@]}"; do echo "  launched  $l"; done
for l in "${TIMINGS[@]}"; do echo "  timing    $l"; done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
