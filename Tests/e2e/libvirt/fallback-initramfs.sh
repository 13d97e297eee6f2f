#!/bin/sh
# A minimal guest initramfs for the libvirt test, used only when the full rig
# (Tests/e2e/build-initramfs.sh) is not in the tree. It understands the same
# kernel parameters as the rig's /init that the libvirt test uses:
#   e2e.tag=TAG     virtio-fs tag to mount on /mnt
#   e2e.cmd=BASE64  shell command run inside /mnt
# and prints the same "E2E ..." lines on the serial console.
# Usage: fallback-initramfs.sh OUT_DIR   (prints the image path on stdout)
set -eu
out_dir=${1:?usage: fallback-initramfs.sh OUT_DIR}
kver="${E2E_KERNEL_VERSION:-$(ls /lib/modules | sort -V | tail -n 1)}"
busybox="${E2E_BUSYBOX:-$(command -v busybox || echo /bin/busybox)}"
modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci fuse virtiofs"

die() { echo "fallback-initramfs: $*" >&2; exit 1; }
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || die "$busybox is not static (install busybox-static)"
command -v cpio >/dev/null || die "cpio missing"

stage=$(mktemp -d "$out_dir/fallback-stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/proc" "$stage/sys" "$stage/dev" "$stage/mnt" "$stage/lib/modules"
cp "$busybox" "$stage/bin/busybox"
ln -s busybox "$stage/bin/sh"
: > "$stage/lib/modules/order"
for m in $modules; do
    p=$(find "/lib/modules/$kver" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \) | head -n 1)
    # Modules built into the kernel have no file and need no loading.
    [ -n "$p" ] || continue
    case "$p" in
        *.xz) xz -dc "$p" > "$stage/lib/modules/$m.ko" ;;
        *.zst) zstd -qdc "$p" > "$stage/lib/modules/$m.ko" ;;
        *) cp "$p" "$stage/lib/modules/$m.ko" ;;
    esac
    echo "$m" >> "$stage/lib/modules/order"
done
cat > "$stage/init" <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
param() { for w in $(cat /proc/cmdline); do case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac; done; return 1; }
finish() { sync; echo "E2E POWEROFF"; poweroff -f; while :; do sleep 1; done; }
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m.ko" || { echo "E2E MODULE_FAIL $m"; finish; }; done
tag=$(param e2e.tag) || tag=myfs
if ! mount -t virtiofs "$tag" /mnt; then echo "E2E MOUNT_FAIL $tag"; finish; fi
echo "E2E MOUNTED $tag"
cmd=$(param e2e.cmd | base64 -d)
(cd /mnt && sh -c "$cmd")
echo "E2E CMD_EXIT $?"
umount /mnt || echo "E2E UMOUNT_FAIL"
finish
EOF
chmod 0755 "$stage/init"
image="$out_dir/libvirt-fallback-initramfs.cpio.gz"
(cd "$stage" && find . | sort | cpio --quiet -o -H newc -R 0:0) | gzip -6 > "$image"
echo "$image"
