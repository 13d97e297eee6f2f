#!/usr/bin/env bash
# A short, narrated demonstration: share a host directory with a virtual machine.
#
#   Tests/e2e/demo.sh --daemon BIN [--keep]
#
# Starts the daemon on a directory with a few files, boots a tiny Linux guest under
# QEMU (software emulation, no KVM needed) that mounts the share, lists it, reads a
# file and writes one back; then shows the new file on the host. Exits 0 on success.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

e2e_daemon_arguments '2,9p' "$@"
e2e_tmp
e2e_build_initramfs

shared=$E2E_TMP/shared-with-guest
sock=$E2E_TMP/virtiofsd.sock
tag=demo
mkdir -p "$shared/notes"
chmod 0755 "$shared" "$shared/notes"
printf 'Hello! This file lives on the host.\n' >"$shared/README.txt"
printf 'buy milk\nwrite more tests\n' >"$shared/notes/todo.txt"
head -c 4096 /dev/urandom >"$shared/photo.dat"

step() { printf '\n\033[1m%s\033[0m\n' "$*"; }
step "1. On the host, the directory $shared holds:"
(cd "$shared" && find . -mindepth 1 | sort | sed 's|^\./|     |')

opts="cache=auto"
step "2. Start the virtio-fs daemon, which serves that directory on a UNIX socket:"
echo "     $daemon --socket-path=$sock -o source=$shared,$opts"
if ! e2e_start_daemon "$daemon" "$sock" "$shared" "$opts" "$E2E_TMP/daemon.log"; then
    echo "The daemon did not start. Its last words:"
    tail -n 5 "$E2E_TMP/daemon.log" | sed 's/^/     /'
    exit 1
fi

guest_cmd='echo "DEMO_BEGIN"
echo "$ mount -t virtiofs demo /mnt     (done at boot)"
echo "$ ls -l /mnt"; ls -l /mnt
echo "$ cat /mnt/README.txt"; cat /mnt/README.txt
echo "$ cat /mnt/notes/todo.txt"; cat /mnt/notes/todo.txt
echo "$ echo \"Hello host, greetings from the guest.\" > /mnt/from-guest.txt"
echo "Hello host, greetings from the guest." > /mnt/from-guest.txt
echo "$ uname -sr"; uname -sr
echo "DEMO_END"'
step "3. Boot a small Linux virtual machine in QEMU whose virtio-fs device talks to that socket"
echo "   (software emulation, this takes 10-20 seconds). Inside, the guest runs:"
console=$E2E_TMP/console
rc=0
e2e_boot "$sock" "$tag" "e2e.tag=$tag e2e.cmd=$(e2e_b64 "$guest_cmd")" "$console" || rc=$?
e2e_stop_daemon
tr -d '\r' <"$console" >"$console.txt"
if ! grep -a -q 'E2E MOUNTED' "$console.txt"; then
    echo "The guest could not mount the share (QEMU exit $rc). Last console lines:"
    tail -n 8 "$console.txt" | sed 's/^/     /'
    tail -n 3 "$console.qemu" | sed 's/^/     /'
    exit 1
fi
sed -n '/^DEMO_BEGIN/,/^DEMO_END/p' "$console.txt" | sed '1d;$d' | sed 's/^/   guest| /'

step "4. The guest has shut down. Back on the host, the file it wrote is really there:"
if [ "$(cat "$shared/from-guest.txt" 2>/dev/null)" = "Hello host, greetings from the guest." ]; then
    echo "     $shared/from-guest.txt ($(stat -c '%s bytes, owner %U' "$shared/from-guest.txt")):"
    sed 's/^/       /' "$shared/from-guest.txt"
    step "Done: the guest listed and read the host's files through virtio-fs and wrote one back."
    [ -n "${E2E_KEEP:-}" ] && echo "(kept $E2E_TMP)"
    exit 0
fi
echo "     from-guest.txt is missing or wrong on the host: the write did not arrive."
exit 1
