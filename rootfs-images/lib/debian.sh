# Shared part of the Debian-based image recipes (python, gcc): sourced by their
# build.sh, never run on its own. A recipe sets
#
#   IMAGE_NAME       the image's name (python)
#   IMAGE_PACKAGES   array of Debian packages to add to a minbase system
#   image_languages  a function: `image_languages ROOT` prints the JSON array of
#                    the languages in ROOT, from the installed programs' own
#                    version output (it may run them with `chroot ROOT ...`)
#   image_slim       optional function: `image_slim ROOT` removes what this
#                    image does not need, after the common slimming
#
# then calls `debian_image_main "$@"` (usage: build.sh OUTDIR).
#
# What it does: `debootstrap --variant=minbase` of bookworm with the packages,
# apt, docs, man pages, locales, caches and logs removed, a `sandbox` user
# (uid/gid 1000, home /tmp), /etc/corral-image.json with the languages, every
# mtime set to SOURCE_DATE_EPOCH and setuid/setgid bits cleared. Python's
# bytecode is recompiled as unchecked-hash .pyc, so a read-only root never
# needs a .pyc written and the result does not depend on mtimes.
#
# Inputs (environment):
#   DEBIAN_MIRROR     mirror URL (default http://deb.debian.org/debian); for a
#                     bit-for-bit rebuild later, a snapshot.debian.org URL
#   DEBIAN_SUITE      default bookworm
#   SOURCE_DATE_EPOCH default 1686355200 (2023-06-10, the bookworm release)
#   CORRAL_DEB_CACHE  optional directory where debootstrap keeps the .debs
#
# Outputs: OUTDIR (the root filesystem, built next to it in a temp dir and
# renamed into place), OUTDIR.stamp (the inputs: recipe hashes, mirror, suite,
# epoch; when it matches, nothing is rebuilt) and OUTDIR.digest (a SHA-256 of
# the tree: paths, modes, owners, mtimes, link targets and file contents; two
# builds from the same package versions give the same digest).

set -euo pipefail
export LC_ALL=C

debian_image_main() {
    if [[ $# -ne 1 ]]; then
        echo "usage: $0 OUTDIR" >&2
        exit 2
    fi
    local out stamp mirror suite epoch want recipe lib
    out=$(realpath -m -- "$1")
    stamp="$out.stamp"
    mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    suite=${DEBIAN_SUITE:-bookworm}
    epoch=${SOURCE_DATE_EPOCH:-1686355200}
    recipe=$(sha256sum "$0" | cut -d' ' -f1)
    lib=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
    want="image $IMAGE_NAME recipe $recipe lib $lib suite $suite mirror $mirror epoch $epoch"

    if [[ -d "$out" && -f "$stamp" && "$(cat -- "$stamp")" == "$want" ]]; then
        echo "image $IMAGE_NAME: $out is up to date"
        exit 0
    fi
    if ((EUID != 0)); then
        echo "error: building the $IMAGE_NAME image needs root (debootstrap, chroot)" >&2
        exit 1
    fi
    if ! command -v debootstrap >/dev/null; then
        echo "error: debootstrap is not installed (run 'make deps')" >&2
        exit 1
    fi

    local parent started
    parent=$(dirname -- "$out")
    mkdir -p -- "$parent"
    started=$(date +%s)
    _tmp=$(mktemp -d "$parent/.$(basename -- "$out").tmp.XXXXXX")
    _old=""
    trap _debian_image_cleanup EXIT
    local root="$_tmp/rootfs"

    export SOURCE_DATE_EPOCH=$epoch DEBIAN_FRONTEND=noninteractive
    local opts=(--variant=minbase --arch="$(dpkg --print-architecture)")
    if ((${#IMAGE_PACKAGES[@]})); then
        opts+=("--include=$(IFS=,; echo "${IMAGE_PACKAGES[*]}")")
    fi
    if [[ -n "${CORRAL_DEB_CACHE:-}" ]]; then
        mkdir -p -- "$CORRAL_DEB_CACHE"
        opts+=("--cache-dir=$(realpath -- "$CORRAL_DEB_CACHE")")
    fi
    # dpkg without an fsync per file (the tree is renamed into place only once
    # complete); the setting is removed again below.
    mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
    echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/corral-unsafe-io"
    echo "image $IMAGE_NAME: debootstrap ${opts[*]} $suite ($mirror)"
    if ! debootstrap "${opts[@]}" "$suite" "$root" "$mirror" >"$_tmp/debootstrap.log" 2>&1; then
        tail -n 30 "$_tmp/debootstrap.log" >&2
        echo "error: debootstrap failed for image $IMAGE_NAME (log above)" >&2
        exit 1
    fi

    rm -f -- "$root/etc/dpkg/dpkg.cfg.d/corral-unsafe-io"
    _debian_image_slim "$root"
    if declare -F image_slim >/dev/null; then image_slim "$root"; fi
    _debian_image_user "$root"
    _debian_image_metadata "$root"
    _debian_image_pyc "$root"
    _debian_image_normalize "$root" "$epoch"

    _debian_image_unmount_all
    if [[ -e "$out" ]]; then
        _old=$(mktemp -d "$parent/.$(basename -- "$out").old.XXXXXX")
        mv -T -- "$out" "$_old/rootfs"
    fi
    mv -T -- "$root" "$out"
    _debian_image_digest "$out" >"$out.digest"
    echo "$want" >"$stamp"
    echo "image $IMAGE_NAME: built $out in $(($(date +%s) - started)) s," \
        "$(du -sh --apparent-size -- "$out" | cut -f1)," \
        "$(jq -c .languages "$out/etc/corral-image.json" 2>/dev/null || cat "$out/etc/corral-image.json")"
}

# Unmounts whatever debootstrap (or a failed chroot) left mounted under the temp
# dir, deepest first, so that removing the temp dir never reaches the host's
# /proc, /sys or /dev.
_debian_image_unmount_all() {
    [[ -n "${_tmp:-}" ]] || return 0
    local m
    while read -r m; do
        umount -l -- "$m" 2>/dev/null || true
    done < <(awk -v p="$_tmp/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
}

_debian_image_cleanup() {
    _debian_image_unmount_all
    if [[ -n "${_tmp:-}" ]]; then rm -rf --one-file-system -- "$_tmp"; fi
    if [[ -n "${_old:-}" ]]; then rm -rf --one-file-system -- "$_old"; fi
}

# What a sandbox never uses: apt (no network, no root), package lists and
# caches, docs (copyright files kept), man and info pages, translations, logs,
# and the host files debootstrap copied in.
_debian_image_slim() {
    local root=$1
    # apt and what only apt needs; dpkg stays (its status file is the package list).
    chroot "$root" dpkg --purge apt libapt-pkg6.0 gpgv debian-archive-keyring >/dev/null
    rm -rf -- "$root"/var/lib/apt "$root"/etc/apt "$root"/var/cache/* "$root"/var/log/* \
        "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/lintian \
        "$root"/usr/share/locale "$root"/usr/share/bug "$root"/usr/share/menu \
        "$root"/var/lib/dpkg/*-old "$root"/etc/*- "$root"/etc/ld.so.cache~ \
        "$root"/etc/machine-id "$root"/var/lib/dbus/machine-id
    find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    # The runtime provides /dev, /proc, /sys, /run and /tmp (a tmpfs).
    find "$root/dev" "$root/proc" "$root/sys" "$root/run" "$root/tmp" "$root/var/tmp" \
        -mindepth 1 -delete
    chmod 1777 "$root/tmp" "$root/var/tmp"
    echo corral >"$root/etc/hostname"
    cat >"$root/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
HOSTS
    : >"$root/etc/resolv.conf"
    # Privilege bits grant nothing under no_new_privs; drop them anyway.
    find "$root" -xdev -perm /6000 -type f -exec chmod ug-s {} +
}

# The unprivileged user programs run as: uid/gid 1000, home /tmp (always a
# writable tmpfs, even when the workspace /work is mounted read-only).
_debian_image_user() {
    local root=$1
    echo 'sandbox:x:1000:1000:sandbox:/tmp:/usr/sbin/nologin' >>"$root/etc/passwd"
    echo 'sandbox:x:1000:' >>"$root/etc/group"
    echo 'sandbox:*::0:99999:7:::' >>"$root/etc/shadow"
    echo 'sandbox:*::' >>"$root/etc/gshadow"
    install -d -m 0755 -o 1000 -g 1000 "$root/work"
}

# /etc/corral-image.json: what the image carries, from the installed programs.
_debian_image_metadata() {
    local root=$1 languages debian
    languages=$(image_languages "$root")
    debian=$(cat "$root/etc/debian_version")
    printf '{"name":"%s","distribution":"debian %s","languages":%s}\n' \
        "$IMAGE_NAME" "$debian" "$languages" >"$root/etc/corral-image.json"
    chmod 0644 "$root/etc/corral-image.json"
}

# Every .pyc again, as unchecked-hash: valid whatever the mtimes, never
# rewritten at run time (the root is read-only, and nothing is checked).
_debian_image_pyc() {
    local root=$1 dirs=()
    [[ -x "$root/usr/bin/python3" ]] || return 0
    find "$root" -xdev -name '__pycache__' -type d -prune -exec rm -rf {} +
    local d
    for d in "$root"/usr/lib/python3 "$root"/usr/lib/python3.*; do
        if [[ -d "$d" ]]; then dirs+=("${d#"$root"}"); fi
    done
    ((${#dirs[@]})) || return 0
    chroot "$root" /usr/bin/python3 -m compileall -q \
        --invalidation-mode unchecked-hash "${dirs[@]}" >/dev/null
}

# Fixed mtimes, so that the same packages give the same tree.
_debian_image_normalize() {
    local root=$1 epoch=$2
    find "$root" -xdev -depth -exec touch -h -d "@$epoch" {} +
}

# A SHA-256 over the sorted tree: one line per entry (type, mode, owner, mtime,
# path, link target), then every regular file's content hash.
_debian_image_digest() {
    local root=$1
    (
        cd -- "$root"
        find . -printf '%y %m %U:%G %T@ %p -> %l\n' | sort
        find . -type f -print0 | sort -z | xargs -0r sha256sum
    ) | sha256sum | cut -d' ' -f1
}
