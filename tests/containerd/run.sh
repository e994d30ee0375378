#!/usr/bin/env bash
# Check that containerd, through its runc v2 shim (io.containerd.runc.v2), can drive an
# OCI runtime (corral) with runc's CLI.
#
#   CORRAL=/path/to/corral ROOTFS=/path/to/busybox-rootfs tests/containerd/run.sh
#
# Works with any runc-compatible runtime (CORRAL=$(command -v runc) is the reference).
# Must run as root. What it does:
#
# - starts a private containerd: its root, state, sockets and config under a temp dir
#   (no CRI plugin, no network, nothing shared with a system containerd);
# - builds a busybox OCI image from $ROOTFS with umoci (nothing is pulled) and imports it
#   with `ctr image import`;
# - runs containers through the runc v2 shim with `--runc-binary $CORRAL` (and the
#   runtime's state under the temp dir with `--runc-root`): output and exit code of a
#   run to completion, `ctr task kill` of a long-running one, `ctr task exec`,
#   `ctr task pause`/`resume`, `ctr task metrics`, `ctr task ps`; and `update` of a task it made (ctr 1.6 has no
#   `task update`);
# - stops the daemon and removes everything at exit (trap), also on failure.
set -euo pipefail

CORRAL=${CORRAL:?set CORRAL to the runtime binary}
ROOTFS=${ROOTFS:?set ROOTFS to a busybox root filesystem}
if ((EUID != 0)); then
    echo "error: $0 must run as root" >&2
    exit 1
fi
for tool in containerd ctr containerd-shim-runc-v2 umoci; do
    if ! command -v "$tool" >/dev/null; then
        echo "error: $tool not found (scripts/install-deps.sh installs it)" >&2
        exit 1
    fi
done
if [[ ! -x "$CORRAL" ]]; then
    echo "error: runtime $CORRAL is not executable" >&2
    exit 1
fi
if [[ ! -x "$ROOTFS/bin/busybox" ]]; then
    echo "error: $ROOTFS has no /bin/busybox (run 'make rootfs')" >&2
    exit 1
fi
CORRAL=$(realpath "$CORRAL")

tmp=$(mktemp -d /tmp/corral-containerd.XXXXXX)
sock="$tmp/containerd.sock"
daemon_pid=""
NS=corraltest
IMAGE=localhost/corral-busybox:latest

cleanup() {
    set +e
    # CONTAINERD_LOG=FILE keeps the daemon's log for debugging.
    if [[ -n "${CONTAINERD_LOG:-}" ]]; then cp -- "$tmp/containerd.log" "$CONTAINERD_LOG"; fi
    if [[ -S "$sock" ]]; then
        for c in $(ctr_ containers ls -q 2>/dev/null); do
            ctr_ tasks kill -s SIGKILL "$c" >/dev/null 2>&1
            ctr_ tasks delete -f "$c" >/dev/null 2>&1
            ctr_ containers delete "$c" >/dev/null 2>&1
        done
    fi
    if [[ -n "$daemon_pid" ]]; then
        kill "$daemon_pid" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$daemon_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$daemon_pid" 2>/dev/null
    fi
    # Snapshots are overlay mounts under the temp root.
    grep -o " $tmp/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    rm -rf -- "$tmp"
}
trap cleanup EXIT

ctr_() {
    timeout 60 ctr --address "$sock" --namespace "$NS" "$@"
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
err="$tmp/stderr"

# --- the private daemon ------------------------------------------------------------
mkdir -p "$tmp/root" "$tmp/state" "$tmp/runc"
cat >"$tmp/config.toml" <<EOF
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF
containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do
    if ctr --address "$sock" version >/dev/null 2>&1; then break; fi
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
        echo "error: containerd exited; its log:" >&2
        sed 's/^/    /' "$tmp/containerd.log" >&2
        exit 1
    fi
    sleep 0.1
done
echo "runtime:    $CORRAL"
echo "containerd: $(containerd --version)"

# --- a busybox OCI image from the rootfs ----------------------------------------------
umoci init --layout "$tmp/oci" >/dev/null
umoci new --image "$tmp/oci:latest" >/dev/null
umoci insert --image "$tmp/oci:latest" "$ROOTFS" / >/dev/null
umoci config --image "$tmp/oci:latest" --config.cmd sh \
    --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin >/dev/null
tar -C "$tmp/oci" -cf "$tmp/busybox.tar" .
rc=0
ctr_ images import --base-name localhost/corral-busybox "$tmp/busybox.tar" >/dev/null 2>"$err" || rc=$?
check "import the busybox OCI archive" 0 "$rc" "$err"
if ((rc != 0)); then
    echo "$passed passed, $failed failed"
    exit 1
fi

RUNC=(--runtime io.containerd.runc.v2 --runc-binary "$CORRAL" --runc-root "$tmp/runc")

# --- run to completion: output and exit code -------------------------------------------
rc=0
out=$(ctr_ run --rm "${RUNC[@]}" "$IMAGE" c-echo echo hello 2>"$err") || rc=$?
check "ctr run echo hello" "hello (exit 0)" "$out (exit $rc)" "$err"

rc=0
ctr_ run --rm "${RUNC[@]}" "$IMAGE" c-exit sh -c 'exit 3' >/dev/null 2>"$err" || rc=$?
check "ctr run sh -c 'exit 3' exits with 3" 3 "$rc" "$err"

# --- a long-running container -----------------------------------------------------------
rc=0
ctr_ run -d "${RUNC[@]}" "$IMAGE" c-long sleep 600 >/dev/null 2>"$err" || rc=$?
check "ctr run -d sleep 600" 0 "$rc" "$err"
status=$(ctr_ tasks ls 2>"$err" | awk '$1 == "c-long" {print $3}')
check "task c-long is RUNNING" RUNNING "$status" "$err"

rc=0
out=$(ctr_ tasks exec --exec-id e1 c-long sh -c 'echo in-container; exit 5' 2>"$err") || rc=$?
check "ctr task exec: output and exit code" "in-container (exit 5)" "$out (exit $rc)" "$err"

rc=0
out=$(ctr_ tasks exec --exec-id e2 c-long sh -c 'cat /proc/1/cmdline | tr "\0" " "' 2>"$err") || rc=$?
check "ctr task exec joins the container's pid namespace" "sleep 600 (exit 0)" "${out% } (exit $rc)" "$err"

rc=0
out=$(ctr_ tasks ps c-long 2>"$err" | tail -n +2 | wc -l) || rc=$?
check "ctr task ps lists the init" "1 (exit 0)" "$out (exit $rc)" "$err"

rc=0
ctr_ tasks pause c-long 2>"$err" || rc=$?
status=$(ctr_ tasks ls | awk '$1 == "c-long" {print $3}')
check "ctr task pause" "PAUSED (exit 0)" "$status (exit $rc)" "$err"
runtime_status=$("$CORRAL" --root "$tmp/runc/$NS" state c-long 2>/dev/null |
    sed -n 's/.*"status": "\([a-z]*\)".*/\1/p')
check "the runtime reports paused" paused "$runtime_status"

rc=0
ctr_ tasks resume c-long 2>"$err" || rc=$?
status=$(ctr_ tasks ls | awk '$1 == "c-long" {print $3}')
check "ctr task resume" "RUNNING (exit 0)" "$status (exit $rc)" "$err"

rc=0
metrics=$(ctr_ tasks metrics --format json c-long 2>"$err") || rc=$?
has_pids=$(grep -c '"pids"\|"Pids"' <<<"$metrics" || true)
check "ctr task metrics reports pids" "yes (exit 0)" "$([[ $has_pids -gt 0 ]] && echo yes || echo no) (exit $rc)" "$err"

rc=0
"$CORRAL" --root "$tmp/runc/$NS" update --memory 64m c-long 2>"$err" || rc=$?
if [[ "$(stat -fc %T /sys/fs/cgroup)" == cgroup2fs ]]; then
    mem_file=/sys/fs/cgroup/$NS/c-long/memory.max
else
    mem_file=/sys/fs/cgroup/memory/$NS/c-long/memory.limit_in_bytes
fi
check "runtime update --memory 64m of a containerd task: $mem_file" "67108864 (exit 0)" "$(cat "$mem_file" 2>/dev/null) (exit $rc)" "$err"

rc=0
ctr_ tasks kill -s SIGKILL c-long 2>"$err" || rc=$?
for _ in $(seq 50); do
    status=$(ctr_ tasks ls | awk '$1 == "c-long" {print $3}')
    [[ "$status" == STOPPED ]] && break
    sleep 0.1
done
check "ctr task kill stops the task" "STOPPED (exit 0)" "$status (exit $rc)" "$err"

rc=0
ctr_ tasks delete c-long >/dev/null 2>"$err" || rc=$?
check "ctr task delete" 0 "$rc" "$err"
ctr_ containers delete c-long >/dev/null 2>&1 || true

left=$(find "$tmp/runc" -mindepth 2 -maxdepth 2 2>/dev/null)
check "no runtime state left" "" "$left"
cg=""
for h in /sys/fs/cgroup/*/; do
    [[ -d "$h$NS" ]] && cg+=$(find "$h$NS" -mindepth 1 -type d 2>/dev/null)
done
check "no container cgroups left" "" "$cg"

echo "$passed passed, $failed failed"
if ((failed)); then
    echo "containerd log (last lines):"
    tail -n 30 "$tmp/containerd.log" | sed 's/^/    /'
fi
((failed == 0))
