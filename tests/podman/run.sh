#!/usr/bin/env bash
# Check that podman can drive an OCI runtime (corral) with runc's CLI.
#
#   CORRAL=/path/to/corral ROOTFS=/path/to/busybox-rootfs tests/podman/run.sh
#
# Works with any runc-compatible runtime (CORRAL=$(command -v runc) is the
# reference). Must run as root. Podman quirks met on Debian 12 (podman 4.3)
# in a VM without systemd and without CAP_SYS_RESOURCE:
#
# - Private --root/--runroot/--tmpdir/--network-config-dir under a temp dir so
#   the host's podman state (/var/lib/containers, /run/libpod, ...) is never
#   touched. Left on the host regardless: the /dev/shm/libpod_lock segment
#   (lock ids are freed again by --rm) and an empty /run/containers/networks.
# - --storage-driver vfs: no images are used (--rootfs), and vfs works on any
#   filesystem, unlike overlay on top of overlay/tmpfs.
# - --cgroup-manager cgroupfs / --events-backend file: there is no systemd or
#   journald to talk to.
# - --network none: needs no netavark/CNI/slirp4netns setup.
# - --ulimit nofile=1024:1024 --ulimit nproc=1024:1024: rootful podman asks
#   the runtime for RLIMIT_NOFILE/RLIMIT_NPROC = 1048576, and podman itself
#   lowers its own RLIMIT_NPROC to 32768. Raising a hard limit needs
#   CAP_SYS_RESOURCE, which this machine's root lacks, so any runtime fails
#   with "setting rlimit ...: operation not permitted". Lowering is always fine.
# - The runtime state dir is the runtime's default (e.g. /run/runc): with
#   --runtime-flag root=DIR, podman 4.3 passes --root to create/start but not
#   to "delete --force", leaking the container's state and cgroups.
# - podman writes into the --rootfs tree (/etc/mtab, /run/.containerenv), so
#   each run uses a private copy of $ROOTFS.
set -euo pipefail

CORRAL=${CORRAL:?set CORRAL to the runtime binary}
ROOTFS=${ROOTFS:?set ROOTFS to a busybox root filesystem}
if ((EUID != 0)); then
    echo "error: $0 must run as root" >&2
    exit 1
fi
if [[ ! -x "$CORRAL" ]]; then
    echo "error: runtime $CORRAL is not executable" >&2
    exit 1
fi
if [[ ! -x "$ROOTFS/bin/busybox" ]]; then
    echo "error: $ROOTFS has no /bin/busybox (run 'make rootfs')" >&2
    exit 1
fi
CORRAL=$(realpath "$CORRAL")

tmp=$(mktemp -d /tmp/corral-podman.XXXXXX)
trap 'rm -rf -- "$tmp"' EXIT

pod() {
    timeout 120 podman \
        --root "$tmp/root" --runroot "$tmp/runroot" --tmpdir "$tmp/tmp" \
        --network-config-dir "$tmp/net" --storage-driver vfs \
        --cgroup-manager cgroupfs --events-backend file \
        --runtime "$CORRAL" "$@"
}

# prun CIDFILE [PODMAN-RUN-OPTIONS...] -- COMMAND... : podman run --rm on a
# fresh copy of the rootfs.
prun() {
    local cidfile=$1
    shift
    local opts=()
    while (($#)) && [[ "$1" != -- ]]; do
        opts+=("$1")
        shift
    done
    shift
    rm -rf -- "$tmp/rootfs"
    cp -a -- "$ROOTFS" "$tmp/rootfs"
    pod run --rm --cidfile "$cidfile" --network none \
        --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
        "${opts[@]}" --rootfs "$tmp/rootfs" "$@"
}

passed=0
failed=0
# check NAME EXPECTED ACTUAL [STDERR-FILE]
check() {
    if [[ "$2" == "$3" ]]; then
        echo "PASS: $1"
        passed=$((passed + 1))
    else
        echo "FAIL: $1: expected '$2', got '$3'"
        if [[ -s "${4:-}" ]]; then sed 's/^/    stderr: /' "$4"; fi
        failed=$((failed + 1))
    fi
}

if [[ "$(stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]]; then
    mem_file=/sys/fs/cgroup/memory.max
    pids_file=/sys/fs/cgroup/pids.max
    cgroup_v2=1
else
    mem_file=/sys/fs/cgroup/memory/memory.limit_in_bytes
    pids_file=/sys/fs/cgroup/pids/pids.max
    cgroup_v2=0
fi
echo "runtime: $CORRAL"
echo "podman:  $(podman --version), cgroup v$((cgroup_v2 + 1))"

err="$tmp/stderr"

rc=0
out=$(prun "$tmp/cid.a" -- echo hello 2>"$err") || rc=$?
check "echo hello prints hello" "hello (exit 0)" "$out (exit $rc)" "$err"

rc=0
out=$(prun "$tmp/cid.b" -- sh -c 'exit 3' 2>"$err") || rc=$?
check "sh -c 'exit 3' exits with 3" 3 "$rc" "$err"

rc=0
out=$(prun "$tmp/cid.c" --memory 64m -- cat "$mem_file" 2>"$err") || rc=$?
check "--memory 64m: $mem_file" "67108864 (exit 0)" "$out (exit $rc)" "$err"

rc=0
out=$(prun "$tmp/cid.d" --pids-limit 50 -- cat "$pids_file" 2>"$err") || rc=$?
check "--pids-limit 50: $pids_file" "50 (exit 0)" "$out (exit $rc)" "$err"

# A terminal through the runtime's --console-socket (conmon holds the pty master).
rc=0
out=$(prun "$tmp/cid.e" -t -- sh -c 'tty; test -t 0 && echo is-a-tty' 2>"$err" | tr -d '\r') || rc=$?
check "run -t: the process has a terminal" "$(printf '/dev/pts/0\nis-a-tty') (exit 0)" "$out (exit $rc)" "$err"

# A long-running container: exec, pause/unpause, stop, rm.
rm -rf -- "$tmp/rootfs-long"
cp -a -- "$ROOTFS" "$tmp/rootfs-long"
rc=0
pod run -d --name corral-long --cidfile "$tmp/cid.long" --network none \
    --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
    --rootfs "$tmp/rootfs-long" sleep 600 >/dev/null 2>"$err" || rc=$?
check "run -d sleep 600" 0 "$rc" "$err"
state() { pod inspect --format '{{.State.Status}}' corral-long 2>/dev/null; }
check "container is running" running "$(state)"

rc=0
out=$(pod exec corral-long sh -c 'echo in-container; cat /proc/1/cmdline | tr "\0" " "' 2>"$err") || rc=$?
check "exec: output, in the container's pid namespace" "in-container sleep 600 (exit 0)" "$(echo $out) (exit $rc)" "$err"

rc=0
pod exec corral-long sh -c 'exit 4' 2>"$err" || rc=$?
check "exec: exit code 4" 4 "$rc" "$err"

rc=0
out=$(pod exec -t corral-long sh -c 'test -t 1 && echo exec-tty' 2>"$err" | tr -d '\r') || rc=$?
check "exec -t: the process has a terminal" "exec-tty (exit 0)" "$out (exit $rc)" "$err"

rc=0
pod pause corral-long >/dev/null 2>"$err" || rc=$?
check "pause" "paused (exit 0)" "$(state) (exit $rc)" "$err"
rc=0
pod unpause corral-long >/dev/null 2>"$err" || rc=$?
check "unpause" "running (exit 0)" "$(state) (exit $rc)" "$err"

rc=0
pod stop -t 2 corral-long >/dev/null 2>"$err" || rc=$?
check "stop" "exited (exit 0)" "$(state) (exit $rc)" "$err"
rc=0
pod rm corral-long >/dev/null 2>"$err" || rc=$?
check "rm" 0 "$rc" "$err"

# The runtime's delete must remove the containers' cgroups.
leftover=""
for f in "$tmp"/cid.*; do
    [[ -s "$f" ]] || continue
    id=$(cat "$f")
    if ((cgroup_v2)); then
        found=$(find /sys/fs/cgroup -maxdepth 6 -type d -name "*$id*" 2>/dev/null)
    else
        found=$(find /sys/fs/cgroup/*/ -maxdepth 6 -type d -name "*$id*" 2>/dev/null)
    fi
    leftover+=$found
done
check "no container cgroups left after podman run --rm" "" "$leftover"

out=$(pod ps -a --format '{{.ID}}' 2>"$err") || true
check "no containers left in podman" "" "$out" "$err"

echo "$passed passed, $failed failed"
((failed == 0))
