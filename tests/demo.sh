#!/usr/bin/env bash
# vmrecover's main job on the bundled simulated Harvester cluster:
#   1. start harvester-sim with the power-loss scenario (harvester-node-1 lost power;
#      six VMs are stuck Terminating/Stopping on it, with KubeVirt and Harvester finalizers);
#   2. start a real qemu-looking process for default/vm-live-01, as if it still ran here;
#   3. show the stuck VMs with kubectl, the exact plan with `vmrecover --dry-run`,
#      then recover with `vmrecover run --yes`, and show what is left.
# The host root given to vmrecover is a small tree in a temp directory: this machine is
# not a Harvester node, so no Longhorn disk is held or mounted "here".
# Usage: bash tests/demo.sh [--release 1.4|1.5|1.6|1.7|1.8]   (default: the newest, 1.8)
# --release generates that Harvester release's cluster from the same story (its KubeVirt's
# finalizer names, Harvester's finalizers, its versions; see harvester-sim/src/scenarios/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

release=1.8
while [ $# -gt 0 ]; do
  case "$1" in
    --release) [ $# -ge 2 ] || { echo "demo: --release needs a value" >&2; exit 2; }; release=$2; shift 2 ;;
    --release=*) release=${1#--release=}; shift ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "demo: unknown argument $1 (usage: tests/demo.sh [--release 1.4|1.5|1.6|1.7|1.8])" >&2; exit 2 ;;
  esac
done
case "$release" in
  1.4|1.5|1.6|1.7|1.8) ;;
  *) echo "demo: unknown release $release (1.4, 1.5, 1.6, 1.7 or 1.8)" >&2; exit 2 ;;
esac

command -v kubectl >/dev/null || { echo "demo: kubectl is needed (v1.27+)" >&2; exit 1; }
command -v cc >/dev/null || { echo "demo: a C compiler (cc) is needed for the fake qemu process" >&2; exit 1; }
cargo build --quiet --workspace --bins

work=$(mktemp -d)
sim_pid="" qemu_pid=""
cleanup() {
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

./target/debug/harvester-sim --listen 127.0.0.1:0 --kubeconfig-out "$work/kubeconfig" --release "$release" \
  --scenario harvester-sim/scenarios/power-loss.yaml --scenario harvester-sim/scenarios/seed.yaml --log-requests "$work/requests.jsonl" >"$work/sim.out" 2>&1 &
sim_pid=$!
for _ in $(seq 100); do grep -q listening "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
grep -q listening "$work/sim.out" || { cat "$work/sim.out" >&2; exit 1; }
export KUBECONFIG="$work/kubeconfig"

mkdir -p "$work/state"
# This host is harvester-node-1 with nothing of a VM held or mounted: the machine-id and boot
# id its Node reports in the scenario, /dev/longhorn, sysfs, a mount table, proc/self (the
# host's /proc in a pod). The same builder the tests and benchmarks use.
./target/debug/harvester-sim host-root "$work/host"
fake_bin=$(./target/debug/harvester-sim fake-vm-bin)
"$fake_bin/qemu-system-x86_64" -name guest=default_vm-live-01,debug-threads=on \
  -vnc vnc=unix:/var/run/kubevirt-private/22222222-0000-4000-8000-000000000006/virt-vnc >"$work/qemu.out" &
qemu_pid=$!

vmrecover=(./target/debug/vmrecover --node harvester-node-1 --state-dir "$work/state" --host-root "$work/host")
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# vmrecover exits 3 when some VMs are left for a person (here: two are, on purpose).
expect_0_or_3() { local rc=0; "$@" || rc=$?; [ "$rc" = 0 ] || [ "$rc" = 3 ] || { echo "demo: exit code $rc" >&2; exit "$rc"; }; }

step "Harvester $release: the cluster after the power cut (kubectl get vm,vmi -A)"
kubectl get vm,vmi -A
step "vmrecover --dry-run: the exact plan, zero writes"
expect_0_or_3 "${vmrecover[@]}" --dry-run --stuck-after 0s --controller-grace 3s
writes=$(grep -E '"method":"(POST|PUT|PATCH|DELETE)"' "$work/requests.jsonl" | grep -vc '"internal":true' || true)
printf '\nmutating requests the API server saw during the dry-run: %s\n' "$writes"
step "vmrecover run --yes: recover"
expect_0_or_3 "${vmrecover[@]}" --log-level warn run --yes --stuck-after 0s --controller-grace 3s
step "What is left (kubectl get vm,vmi -A)"
kubectl get vm,vmi -A
step "vmrecover status (exit 0 all fine, 3 some VM left for a person, 1 state unreadable)"
rc=0
"${vmrecover[@]}" status --stuck-after 0s >"$work/status.txt" || rc=$?
cat "$work/status.txt"
printf '
vmrecover status exit code: %s
' "$rc"
[ "$rc" = 0 ] || [ "$rc" = 3 ] || { echo "demo: status exit code $rc" >&2; exit "$rc"; }
