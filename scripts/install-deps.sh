#!/usr/bin/env bash
# Install everything corral's build, tests and benchmarks need on Debian 12.
# Idempotent: when every package is already installed it does no apt work.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# podman runs rootful here without systemd; with --no-install-recommends it
# pulls conmon, crun|runc and containers-common (+ a network stack, unused:
# tests/podman/run.sh uses --network none). catatonit is podman's --init.
# debootstrap builds the python and gcc images (rootfs-images/*/build.sh);
# containerd brings ctr and the runc v2 shim (tests/containerd/run.sh); umoci
# builds the OCI image that test imports.
packages=(
    libseccomp-dev pkg-config busybox-static runc podman conmon catatonit
    hyperfine debootstrap containerd umoci
)

missing=()
for p in "${packages[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    if ((EUID != 0)); then
        echo "error: missing packages (${missing[*]}); run as root" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    # Wait for a concurrent apt/dpkg (e.g. unattended-upgrades on boot).
    apt_opts=(-q -o DPkg::Lock::Timeout=600)
    apt-get "${apt_opts[@]}" update
    apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
fi

if command -v rustup >/dev/null 2>&1; then
    installed=$(rustup component list --installed)
    for c in rustfmt clippy; do
        if ! grep -q "^$c" <<<"$installed"; then
            rustup component add "$c"
        fi
    done
elif ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    echo "error: rustfmt/clippy missing and rustup not found" >&2
    exit 1
fi
echo "dependencies OK"
