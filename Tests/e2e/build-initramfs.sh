#!/bin/sh
# Builds the test guest's initramfs: the host kernel's virtio-fs modules (and the 9p
# ones, loaded only by the benchmark guest), static busybox, the guest check program,
# the benchmark program, /init and /bench-init. The result is cached under
# .build/e2e/ keyed by a hash of every input, so reruns cost nothing.
# Prints the path of the initramfs on stdout; everything else goes to stderr.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out_dir="${E2E_BUILD_DIR:-$root/.build/e2e}"
kver="${E2E_KERNEL_VERSION:-$(ls /lib/modules | sort -V | tail -n 1)}"
busybox="${E2E_BUSYBOX:-$(command -v busybox || echo /bin/busybox)}"
modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci fuse virtiofs"
# For the guest-visible benchmark's 9p column (bench-init loads them after the above).
modules_9p="netfs fscache 9pnet 9pnet_virtio 9p"

die() { echo "build-initramfs: $*" >&2; exit 1; }
[ -d "/lib/modules/$kver" ] || die "no modules for kernel $kver (install linux-image-amd64)"
file "$busybox" 2>/dev/null | grep -q 'statically linked' || die "$busybox is not static (install busybox-static)"
command -v cpio >/dev/null || die "cpio missing"
command -v gcc >/dev/null || die "gcc missing"

mod_path() { # the module file for $1, compressed or not
    find "/lib/modules/$kver" -name "$1.ko" -o -name "$1.ko.xz" -o -name "$1.ko.zst" -o -name "$1.ko.gz" | head -n 1
}
inputs=""
for m in $modules $modules_9p; do
    p=$(mod_path "$m")
    # A module built into the kernel has no file; then there is nothing to load.
    if [ -n "$p" ]; then inputs="$inputs $p"; fi
done
key=$(cat "$0" "$here/guest/init" "$here/guest/checks.c" "$here/guest/bench-init" "$here/guest/fsbench.c" "$here/guest/soak.c" "$busybox" $inputs | sha256sum | cut -c1-16)
image="$out_dir/initramfs-$kver-$key.cpio.gz"
if [ -s "$image" ]; then echo "$image"; exit 0; fi

echo "build-initramfs: building $image" >&2
mkdir -p "$out_dir"
stage=$(mktemp -d "$out_dir/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/proc" "$stage/sys" "$stage/dev" "$stage/mnt" "$stage/lib/modules" "$stage/tmp"
cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
cp "$here/guest/init" "$stage/init"
cp "$here/guest/bench-init" "$stage/bench-init"
chmod 0755 "$stage/init" "$stage/bench-init"
gcc -static -O2 -Wall -Wextra -o "$stage/checks" "$here/guest/checks.c" || die "checks.c does not compile"
gcc -static -O2 -Wall -Wextra -o "$stage/fsbench" "$here/guest/fsbench.c" || die "fsbench.c does not compile"
# The soak workload (soak.sh), run through e2e.cmd; the host uses it to checksum files.
gcc -static -O2 -Wall -Wextra -o "$stage/soak" "$here/guest/soak.c" || die "soak.c does not compile"
: > "$stage/lib/modules/order"
: > "$stage/lib/modules/order-9p"
add_module() { # NAME ORDER_FILE: unpack the module into the image and list it
    m=$1
    p=$(mod_path "$m")
    # Built into the kernel: nothing to load.
    [ -n "$p" ] || { grep -q "/$m.ko" "/lib/modules/$kver/modules.builtin" 2>/dev/null && return 0; die "module $m not found"; }
    case "$p" in
        *.ko.xz) xz -dc "$p" > "$stage/lib/modules/$m.ko" ;;
        *.ko.zst) zstd -qdc "$p" > "$stage/lib/modules/$m.ko" ;;
        *.ko.gz) gzip -dc "$p" > "$stage/lib/modules/$m.ko" ;;
        *) cp "$p" "$stage/lib/modules/$m.ko" ;;
    esac
    echo "$m" >> "$2"
}
for m in $modules; do add_module "$m" "$stage/lib/modules/order"; done
for m in $modules_9p; do add_module "$m" "$stage/lib/modules/order-9p"; done
# The check program also runs on the host (to generate reference data), so keep a copy.
cp "$stage/checks" "$out_dir/checks-$key"
ln -sf "checks-$key" "$out_dir/checks"
cp "$stage/soak" "$out_dir/soak-$key"
ln -sf "soak-$key" "$out_dir/soak"
(cd "$stage" && find . | sort | cpio --quiet -o -H newc -R 0:0) | gzip -9 > "$image.tmp"
mv "$image.tmp" "$image"
# Older images of this cache are stale now: keep only the current one.
for old in "$out_dir"/initramfs-*.cpio.gz "$out_dir"/checks-* "$out_dir"/soak-*; do
    case "$old" in "$image"|"$out_dir/checks-$key"|"$out_dir/soak-$key") ;; *) rm -f "$old" ;; esac
done
echo "$image"
