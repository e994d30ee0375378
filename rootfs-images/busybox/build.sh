#!/usr/bin/env bash
# Build a minimal busybox root filesystem from Debian's busybox-static.
#
#   rootfs-images/busybox/build.sh OUTDIR
#
# The result is deterministic (fixed content, mtimes set to the epoch) and is
# built in a temporary directory next to OUTDIR, then renamed into place.
# OUTDIR.stamp records the busybox version and the hash of this recipe; when it
# matches, nothing is rebuilt.
set -euo pipefail
export LC_ALL=C

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$(realpath -m -- "$1")
stamp="$out.stamp"
busybox=/bin/busybox

if [[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" != "install ok installed" ]]; then
    echo "error: busybox-static is not installed (run 'make deps')" >&2
    exit 1
fi
version=$(dpkg-query -W -f='${Version}' busybox-static)
recipe=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
want="busybox-static $version recipe $recipe"

if [[ -d "$out" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "rootfs $out is up to date"
    exit 0
fi

parent=$(dirname -- "$out")
mkdir -p -- "$parent"
tmp=$(mktemp -d "$parent/.$(basename -- "$out").tmp.XXXXXX")
old=""
cleanup() {
    rm -rf -- "$tmp"
    if [[ -n "$old" ]]; then rm -rf -- "$old"; fi
}
trap cleanup EXIT

umask 022
chmod 0755 "$tmp"
cd "$tmp"
mkdir -p bin sbin usr/bin usr/sbin etc proc sys dev root home var run tmp
chmod 1777 tmp
chmod 0700 root

install -m 0755 "$busybox" bin/busybox
# One symlink per applet: at busybox's canonical location (--list-full) and,
# for convenience, also in /bin so that "/bin/<applet>" always works.
while IFS= read -r path; do
    name=${path##*/}
    if [[ ! -e "bin/$name" && ! -L "bin/$name" ]]; then
        ln -s busybox "bin/$name"
    fi
    dir=${path%/*}
    if [[ "$dir" != "$path" && "$dir" != bin && ! -e "$path" && ! -L "$path" ]]; then
        ln -sr bin/busybox "$path"
    fi
done < <("$busybox" --list-full | sort)

cat > etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > etc/group <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
echo corral > etc/hostname
cat > etc/hosts <<'HOSTS'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
HOSTS
: > etc/resolv.conf

find . -depth -exec touch -h -d @0 {} +
cd /

if [[ -e "$out" ]]; then
    old=$(mktemp -d "$parent/.$(basename -- "$out").old.XXXXXX")
    mv -T -- "$out" "$old/rootfs"
fi
mv -T -- "$tmp" "$out"
echo "$want" > "$stamp"
echo "built rootfs $out ($version)"
