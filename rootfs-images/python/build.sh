#!/usr/bin/env bash
# The python image: Debian bookworm minbase + python3 (see ../lib/debian.sh).
#
#   rootfs-images/python/build.sh OUTDIR
set -euo pipefail

IMAGE_NAME=python
IMAGE_PACKAGES=(python3)

image_languages() {
    local version
    version=$(chroot "$1" /usr/bin/python3 -c 'import platform; print(platform.python_version())')
    printf '[{"name":"python","version":"%s","command":"python3"}]' "$version"
}

# shellcheck source=../lib/debian.sh
source "$(dirname -- "$(realpath -- "${BASH_SOURCE[0]}")")/../lib/debian.sh"
debian_image_main "$@"
