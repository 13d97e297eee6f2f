#!/usr/bin/env bash
# Checks that Tests/e2e/libvirt.sh can fail: it is run against daemons that are
# broken in known ways, and must report exactly those failures, exit non-zero
# and leave nothing behind. Then once against a working daemon, which must pass.
#
# Usage: Tests/e2e/libvirt/selftest.sh [--good BIN]   (default BIN: QEMU's C virtiofsd)
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$HERE/../libvirt.sh"
GOOD=/usr/lib/qemu/virtiofsd
if [ "${1:-}" = --good ] && [ $# -ge 2 ]; then GOOD=$2; fi

PASSED=0
FAILED=0
expect() { # expect DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then PASSED=$((PASSED + 1)); echo "PASS $what"; else FAILED=$((FAILED + 1)); echo "FAIL $what"; fi
}
has() { grep -qF -- "$2" "$1"; }
lacks() { ! grep -qF -- "$2" "$1"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/libvirt-selftest.XXXXXX") || exit 2
chmod 0755 "$WORK"
# A descriptor for another fs daemon that sorts before the one libvirt.sh installs.
EARLIER=/etc/qemu/vhost-user/0-libvirt-selftest-earlier.json
MADE_DIRS=()
cleanup() {
    rm -f "$EARLIER"
    for d in "${MADE_DIRS[@]}"; do rmdir "$d" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
tmp_dirs_before=$(ls -d "${TMPDIR:-/tmp}"/swift-virtiofsd-libvirt.* 2>/dev/null | wc -l)

# A daemon that refuses its arguments: QEMU then sees only "Connection refused".
cat > "$WORK/rejecting-daemon" <<'EOF'
#!/bin/sh
echo "rejecting-daemon: unknown option in: $*" >&2
exit 1
EOF
# A daemon that works but shares an empty directory instead of the one asked for.
mkdir -m 0755 "$WORK/elsewhere"
cat > "$WORK/wrong-dir-daemon" <<EOF
#!/bin/sh
exec "$GOOD" "\$@" -o source=$WORK/elsewhere
EOF
# A working daemon under another name, so we can tell which one libvirt launched.
cat > "$WORK/renamed-daemon" <<EOF
#!/bin/sh
exec "$GOOD" "\$@"
EOF
chmod 0755 "$WORK/rejecting-daemon" "$WORK/wrong-dir-daemon" "$WORK/renamed-daemon"

echo "---- rejecting daemon"
rc=0; "$SCRIPT" --daemon "$WORK/rejecting-daemon" --timeout 60 > "$WORK/rejecting.out" 2>&1 || rc=$?
expect "rejecting daemon: exit status 1" [ "$rc" = 1 ]
expect "rejecting daemon: start failure reported" has "$WORK/rejecting.out" "FAIL binarypath: libvirt started the domain"
expect "rejecting daemon: QEMU's connection error shown" has "$WORK/rejecting.out" "Connection refused"
expect "rejecting daemon: its own error shown from the daemon log" has "$WORK/rejecting.out" "rejecting-daemon: unknown option in: --fd="
expect "rejecting daemon: libvirt's command line shown" has "$WORK/rejecting.out" "daemon command line: $WORK/rejecting-daemon --fd="
expect "rejecting daemon: descriptor run also fails to start" has "$WORK/rejecting.out" "FAIL descriptor: libvirt started the domain"
expect "rejecting daemon: counted" has "$WORK/rejecting.out" "2 passed, 2 failed"
expect "rejecting daemon: descriptor removed" [ ! -e /etc/qemu/vhost-user/00-swift-virtiofsd-e2e.json ]

echo "---- daemon sharing the wrong directory"
rc=0; "$SCRIPT" --daemon "$WORK/wrong-dir-daemon" --timeout 120 > "$WORK/wrong.out" 2>&1 || rc=$?
expect "wrong dir: exit status 1" [ "$rc" = 1 ]
expect "wrong dir: the domain still ran and ended" has "$WORK/wrong.out" "PASS binarypath: guest powered off"
expect "wrong dir: unread host file reported" has "$WORK/wrong.out" "FAIL binarypath: guest did not read the host's file back"
expect "wrong dir: missing marker reported" has "$WORK/wrong.out" "FAIL binarypath: marker missing or wrong on the host"
expect "wrong dir: descriptor run reports the same" has "$WORK/wrong.out" "FAIL descriptor: marker missing or wrong on the host"
expect "wrong dir: the marker went where the daemon shared" [ -s "$WORK/elsewhere/libvirt-marker.txt" ]
expect "wrong dir: descriptor removed" [ ! -e /etc/qemu/vhost-user/00-swift-virtiofsd-e2e.json ]

echo "---- another fs descriptor sorts first"
for d in /etc/qemu /etc/qemu/vhost-user; do
    if [ ! -d "$d" ]; then mkdir -m 0755 "$d" && MADE_DIRS=("$d" "${MADE_DIRS[@]}"); fi
done
printf '{ "type": "fs", "binary": "%s" }\n' "$GOOD" > "$EARLIER"
rc=0; "$SCRIPT" --daemon "$WORK/renamed-daemon" > "$WORK/earlier.out" 2>&1 || rc=$?
rm -f "$EARLIER"
expect "earlier descriptor: exit status 1" [ "$rc" = 1 ]
expect "earlier descriptor: run by path unaffected" has "$WORK/earlier.out" "PASS binarypath: libvirt launched $WORK/renamed-daemon"
expect "earlier descriptor: lookup order reported" has "$WORK/earlier.out" "FAIL descriptor: libvirt would pick '$EARLIER' before ours"
expect "earlier descriptor: launch of the other daemon reported" has "$WORK/earlier.out" "FAIL descriptor: libvirt launched '$GOOD', want $WORK/renamed-daemon"
expect "earlier descriptor: counted" has "$WORK/earlier.out" "12 passed, 2 failed"

echo "---- working daemon ($GOOD)"
rc=0; "$SCRIPT" --daemon "$GOOD" > "$WORK/good.out" 2>&1 || rc=$?
expect "working daemon: exit status 0" [ "$rc" = 0 ]
expect "working daemon: every check passed" has "$WORK/good.out" "14 passed, 0 failed"
expect "working daemon: no FAIL line" lacks "$WORK/good.out" "FAIL "

tmp_dirs_after=$(ls -d "${TMPDIR:-/tmp}"/swift-virtiofsd-libvirt.* 2>/dev/null | wc -l)
expect "no work directories left behind" [ "$tmp_dirs_after" = "$tmp_dirs_before" ]
if [ "$FAILED" -ne 0 ]; then
    for f in rejecting wrong earlier good; do echo "==== $f"; cat "$WORK/$f.out"; done
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
