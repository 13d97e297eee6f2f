#!/usr/bin/env bash
# Tests of the rig itself: a rig that cannot fail proves nothing.
#
#   Tests/e2e/selftest.sh [--reference BIN]     (default /usr/lib/qemu/virtiofsd)
#
# 1. The guest check program, run on the host against a plain ext4 directory, passes
#    every check except the one that insists on a FUSE mount (statfs).
# 2. run.sh reports a daemon that refuses to start, exits 1, and does not hang.
# 3. run.sh catches a daemon that silently ignores `-o xattr` (xattr checks fail on
#    both the guest and the host side).
# 4. run.sh catches a daemon that dies while the guest is running, ends QEMU well
#    before the boot timeout, and exits 1.
# 5. run.sh catches a daemon whose caching hides a file the host replaced.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

reference=/usr/lib/qemu/virtiofsd
while [ $# -gt 0 ]; do
    case "$1" in
        --reference) reference=${2:-}; shift 2 ;;
        --reference=*) reference=${1#*=}; shift ;;
        *) e2e_die "unknown argument '$1'" ;;
    esac
done
e2e_require "$reference"
e2e_tmp
e2e_build_initramfs

pass=0 fail=0
expect() { # name condition-status detail
    if [ "$2" = 0 ]; then pass=$((pass + 1)); printf '  %-36s PASS\n' "$1"
    else fail=$((fail + 1)); printf '  %-36s FAIL %s\n' "$1" "$3"; fi
}
# has OUT NAME STATUS: run.sh printed NAME with STATUS.
has() { grep -q -E "^  $2 +$3( |\$)" "$1"; }

echo "selftest 1: guest checks against a plain host directory"
plain=$E2E_TMP/plain
e2e_populate_shared "$plain"
e2e_start_replacer "$plain"
"$CHECKS_HOST" --dir "$plain" --host --xattr >"$E2E_TMP/host-checks.out" 2>&1
fails=$(grep '^CHECK [a-z0-9_]* FAIL' "$E2E_TMP/host-checks.out" | awk '{print $2}' | tr '\n' ' ')
passes=$(grep -c '^CHECK [a-z0-9_]* PASS' "$E2E_TMP/host-checks.out")
[ "$fails" = "statfs " ]; expect checks_on_host_only_statfs_fails $? "failed: '$fails'"
[ "$passes" -ge 30 ]; expect checks_on_host_mostly_pass $? "only $passes passed"
[ "$("$CHECKS_HOST" --pattern 1000 | wc -c)" = 1000 ]; expect pattern_generator_length $? "wrong length"

echo "selftest 2: a daemon that refuses to start"
cat >"$E2E_TMP/refuses" <<'EOF'
#!/bin/sh
echo "refusing to start for the self-test" >&2
exit 1
EOF
chmod +x "$E2E_TMP/refuses"
start=$SECONDS
"$E2E_DIR/run.sh" --daemon "$E2E_TMP/refuses" --config auto >"$E2E_TMP/refuses.out" 2>&1
rc=$?
[ "$rc" = 1 ]; expect refusing_daemon_exit_status $? "run.sh exited $rc"
has "$E2E_TMP/refuses.out" boot FAIL; expect refusing_daemon_boot_fail $? "$(cat "$E2E_TMP/refuses.out")"
grep -q 'refusing to start' "$E2E_TMP/refuses.out"; expect refusing_daemon_message_shown $? "daemon's message not shown"
[ $((SECONDS - start)) -lt 30 ]; expect refusing_daemon_fast $? "took $((SECONDS - start))s"

echo "selftest 3: a daemon that ignores -o xattr"
cat >"$E2E_TMP/no-xattr" <<EOF
#!/bin/bash
args=()
for a in "\$@"; do args+=("\${a//,xattr/}"); done
exec "$reference" "\${args[@]}"
EOF
chmod +x "$E2E_TMP/no-xattr"
"$E2E_DIR/run.sh" --daemon "$E2E_TMP/no-xattr" --config xattr >"$E2E_TMP/no-xattr.out" 2>&1
rc=$?
[ "$rc" = 1 ]; expect no_xattr_exit_status $? "run.sh exited $rc"
has "$E2E_TMP/no-xattr.out" xattr_get_list FAIL; expect no_xattr_guest_check_fails $? "$(grep xattr "$E2E_TMP/no-xattr.out")"
has "$E2E_TMP/no-xattr.out" host_xattr FAIL; expect no_xattr_host_check_fails $? "$(grep host_xattr "$E2E_TMP/no-xattr.out")"
has "$E2E_TMP/no-xattr.out" read_known PASS; expect no_xattr_other_checks_pass $? "read_known did not pass"

echo "selftest 4: a daemon that dies under the running guest"
# Kills the real daemon once the guest's check program has started writing.
cat >"$E2E_TMP/dies" <<EOF
#!/bin/bash
src=""
for a in "\$@"; do case "\$a" in source=*) src=\${a#source=}; src=\${src%%,*} ;; esac; done
"$reference" "\$@" &
child=\$!
while kill -0 \$child 2>/dev/null && [ ! -d "\$src/for-host" ]; do sleep 0.1; done
sleep 1
kill -KILL \$child 2>/dev/null
wait \$child
exit \$?
EOF
chmod +x "$E2E_TMP/dies"
start=$SECONDS
E2E_BOOT_TIMEOUT=150 "$E2E_DIR/run.sh" --daemon "$E2E_TMP/dies" --config auto >"$E2E_TMP/dies.out" 2>&1
rc=$?
took=$((SECONDS - start))
[ "$rc" = 1 ]; expect dying_daemon_exit_status $? "run.sh exited $rc"
has "$E2E_TMP/dies.out" daemon_alive FAIL; expect dying_daemon_reported $? "$(cat "$E2E_TMP/dies.out")"
has "$E2E_TMP/dies.out" daemon_exit FAIL; expect dying_daemon_exit_reported $? "no daemon_exit FAIL"
[ "$took" -lt 90 ]; expect dying_daemon_no_hang $? "took ${took}s"

echo "selftest 5: a daemon that caches forever although cache=auto was asked for"
cat >"$E2E_TMP/sticky" <<EOF
#!/bin/bash
args=()
for a in "\$@"; do args+=("\${a//cache=auto/cache=always}"); done
exec "$reference" "\${args[@]}"
EOF
chmod +x "$E2E_TMP/sticky"
"$E2E_DIR/run.sh" --daemon "$E2E_TMP/sticky" --config auto >"$E2E_TMP/sticky.out" 2>&1
rc=$?
[ "$rc" = 1 ]; expect sticky_cache_exit_status $? "run.sh exited $rc"
has "$E2E_TMP/sticky.out" host_replace_seen FAIL; expect sticky_cache_stale_file_caught $? "$(grep host_replace "$E2E_TMP/sticky.out")"

echo "selftest: $pass passed, $fail failed"
[ "$fail" = 0 ]
