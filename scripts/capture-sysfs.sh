#!/bin/sh
# Capture what `passthru audit --sysfs DIR` reads from a real machine into a tarball.
#
#   sudo sh scripts/capture-sysfs.sh [OUT.tar.gz]
#   tar xzf OUT.tar.gz && passthru audit --sysfs sysfs-snapshot
#
# Run as root: without it the kernel returns only the first 64 bytes of each config space
# (no capabilities, so no ACS) and dmesg may be unreadable. The snapshot keeps the device
# path structure (sys/devices/pci0000:00/<bridge>/<device>) and recreates the links
# (sys/bus/pci/devices/*, iommu_group, driver, physfn) as relative links inside it.
# Nothing is changed on the machine; only files are read.
set -eu

out=${1:-sysfs-snapshot-$(hostname)-$(date +%Y%m%d%H%M%S).tar.gz}
work=$(mktemp -d)
snap=$work/sysfs-snapshot
trap 'rm -rf "$work"' EXIT
mkdir -p "$snap/sys/bus/pci/devices" "$snap/sys/kernel/iommu_groups" "$snap/sys/class/iommu" \
    "$snap/proc"

# copy_link LINK: recreate a symlink that points inside /sys as a relative link in the snapshot
copy_link() {
    target=$(readlink -f "$1")
    mkdir -p "$snap$(dirname "$1")"
    ln -s "$(realpath -m --relative-to="$snap$(dirname "$1")" "$snap$target")" "$snap$1"
}

for link in /sys/bus/pci/devices/*; do
    [ -e "$link" ] || continue
    dev=$(readlink -f "$link")                      # /sys/devices/pci0000:00/.../0000:01:00.0
    mkdir -p "$snap$dev"
    for f in config vendor device class resource; do
        [ -r "$dev/$f" ] && cat "$dev/$f" > "$snap$dev/$f" 2>/dev/null || true
    done
    for l in driver iommu_group physfn; do
        [ -L "$dev/$l" ] && copy_link "$dev/$l"
    done
    copy_link "$link"
done

for g in /sys/kernel/iommu_groups/*; do
    [ -d "$g" ] || continue
    mkdir -p "$snap$g"
    [ -r "$g/type" ] && cat "$g/type" > "$snap$g/type"
done

for u in /sys/class/iommu/*; do
    [ -e "$u" ] || continue
    mkdir -p "$snap$u"
    for f in intel-iommu/cap intel-iommu/ecap intel-iommu/version amd-iommu/features \
             amd-iommu/cap; do
        if [ -r "$u/$f" ]; then
            mkdir -p "$snap$u/$(dirname "$f")"
            cat "$u/$f" > "$snap$u/$f" 2>/dev/null || true
        fi
    done
done

cat /proc/cmdline > "$snap/proc/cmdline"
cat /proc/interrupts > "$snap/proc/interrupts" 2>/dev/null || true
dmesg 2>/dev/null | grep -i -e DMAR -e AMD-Vi -e IOMMU -e remapping > "$snap/dmesg.txt" || true
[ "$(id -u)" = 0 ] || echo "warning: not root: config spaces are cut to 64 bytes" >&2

tar -C "$work" -czf "$out" sysfs-snapshot
echo "wrote $out ($(find "$snap/sys/bus/pci/devices" -mindepth 1 | wc -l) PCI functions)"
