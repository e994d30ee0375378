#!/usr/bin/env bash
# The gcc image: Debian bookworm minbase + gcc, g++ and libc6-dev (see
# ../lib/debian.sh).
#
#   rootfs-images/gcc/build.sh OUTDIR
set -euo pipefail

IMAGE_NAME=gcc
IMAGE_PACKAGES=(gcc g++ libc6-dev)

# gcc-12's lto-dump (30 MB) is a debugging tool for LTO bytecode: not needed
# to compile and link, -flto included.
image_slim() {
    rm -f -- "$1"/usr/bin/lto-dump* "$1"/usr/bin/*-lto-dump-*
}

image_languages() {
    local cc cxx
    cc=$(chroot "$1" /usr/bin/gcc -dumpfullversion)
    cxx=$(chroot "$1" /usr/bin/g++ -dumpfullversion)
    printf '[{"name":"c","version":"%s","command":"gcc"},{"name":"c++","version":"%s","command":"g++"}]' \
        "$cc" "$cxx"
}

# shellcheck source=../lib/debian.sh
source "$(dirname -- "$(realpath -- "${BASH_SOURCE[0]}")")/../lib/debian.sh"
debian_image_main "$@"
