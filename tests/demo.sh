#!/usr/bin/env bash
# vmrecover's main job on the bundled simulated Harvester cluster, the whole story:
#   1. harvester-sim with the power-loss scenario (harvester-node-1 lost power; VMs are stuck
#      Terminating/Stopping on it) plus outcomes.yaml: two Stopping VMs with runStrategy
#      Always and the controllers that restart VMs (virt-controller, scheduler, kubelets);
#   2. this "node": its previous boot's journal ends without a shutdown (a real journal file
#      written by systemd-journal-remote) and its boot records never saw that boot stop, so
#      the verdict is UNCLEAN; a qemu-looking process of default/vm-live-01 still runs here;
#   3. compact `status` before, the agent started as at boot recovering on its own, each
#      recovered VM followed (gone, running again, stopped as asked, or not back and why),
#      compact `status` after, and `status --all-nodes` for the whole site.
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
    -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "demo: unknown argument $1 (usage: tests/demo.sh [--release 1.4|1.5|1.6|1.7|1.8])" >&2; exit 2 ;;
  esac
done
case "$release" in
  1.4|1.5|1.6|1.7|1.8) ;;
  *) echo "demo: unknown release $release (1.4, 1.5, 1.6, 1.7 or 1.8)" >&2; exit 2 ;;
esac

command -v kubectl >/dev/null || { echo "demo: kubectl is needed (v1.27+)" >&2; exit 1; }
command -v cc >/dev/null || { echo "demo: a C compiler (cc) is needed for the fake qemu process" >&2; exit 1; }
journal_remote=$(ls /lib/systemd/systemd-journal-remote /usr/lib/systemd/systemd-journal-remote 2>/dev/null | head -1 || true)
[ -n "$journal_remote" ] || { echo "demo: systemd-journal-remote is needed (apt-get install systemd-journal-remote)" >&2; exit 1; }
cargo build --quiet --workspace --bins

work=$(mktemp -d)
sim_pid="" qemu_pid="" agent_pid=""
cleanup() {
  [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
  [ -n "$qemu_pid" ] && kill "$qemu_pid" 2>/dev/null || true
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

./target/debug/harvester-sim --listen 127.0.0.1:0 --kubeconfig-out "$work/kubeconfig" --release "$release" \
  --scenario harvester-sim/scenarios/power-loss.yaml --scenario harvester-sim/scenarios/seed.yaml \
  --scenario harvester-sim/scenarios/outcomes.yaml --log-requests "$work/requests.jsonl" >"$work/sim.out" 2>&1 &
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

# The previous boot (1b2c…) ran until the power went: its journal tail has no shutdown marker.
# The fixture is export text; systemd-journal-remote writes the real journal file.
mkdir -p "$work/journal"
SYSTEMD_JOURNAL_COMPACT=0 "$journal_remote" --output="$work/journal/system.journal" - \
  <tests/fixtures/journal/power_cut_running.export 2>"$work/journal-remote.out"
# The boot records vmrecover-boot.service keeps: a cut 22 days ago, a clean reboot, the
# previous boot recorded running and never stopped, and this boot (the host root's id).
ago() { date -u -d "@$(( $(date +%s) - $1 ))" +%Y-%m-%dT%H:%M:%SZ; }
machine=5f1e2b7c9a4d4e3f8b6a1c2d3e4f5a6b
cat >"$work/state/boot-records.json" <<RECORDS
{"format": "vmrecover-boot-records", "version": 1, "boots": [
 {"boot_id": "0a1b2c3d4e5f40718293a4b5c6d7e8f9", "machine_id": "$machine", "boot_time": "$(ago 3888000)", "started_at": "$(ago 3887900)", "stopped_at": "$(ago 1900000)"},
 {"boot_id": "0a1b2c3d4e5f40718293a4b5c6d7e8f8", "machine_id": "$machine", "boot_time": "$(ago 1899000)", "started_at": "$(ago 1898900)", "stopped_at": null},
 {"boot_id": "0a1b2c3d4e5f40718293a4b5c6d7e8f7", "machine_id": "$machine", "boot_time": "$(ago 1036800)", "started_at": "$(ago 1036700)", "stopped_at": "$(ago 900000)"},
 {"boot_id": "1b2c3d4e5f60718293a4b5c6d7e8f90a", "machine_id": "$machine", "boot_time": "$(ago 899000)", "started_at": "$(ago 898900)", "stopped_at": null},
 {"boot_id": "2c3d4e5f60718293a4b5c6d7e8f90a1b", "machine_id": "$machine", "boot_time": "$(ago 600)", "started_at": "$(ago 590)", "stopped_at": null}
]}
RECORDS

vmrecover=(./target/debug/vmrecover --node harvester-node-1 --state-dir "$work/state" --host-root "$work/host"
  --journal-dir "$work/journal" --stuck-after 0s --controller-grace 3s --follow-for 20s)
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# vmrecover exits 3 when some VMs are left for a person (here: two are, on purpose).
expect_0_or_3() { local rc=0; "$@" || rc=$?; [ "$rc" = 0 ] || [ "$rc" = 3 ] || { echo "demo: exit code $rc" >&2; exit "$rc"; }; }

step "Harvester $release: the cluster after the power cut (kubectl get vm,vmi -A)"
kubectl get vm,vmi -A
step "vmrecover status: the boot verdict, then what it would do (before)"
expect_0_or_3 "${vmrecover[@]}" status
"${vmrecover[@]}" --dry-run >/dev/null || true
writes=$(grep -E '"method":"(POST|PUT|PATCH|DELETE)"' "$work/requests.jsonl" | grep -vc '"internal":true' || true)
printf '\nmutating requests the API server saw from status and a --dry-run: %s\n' "$writes"

step "vmrecover agent, started as at boot: it acts on the UNCLEAN verdict by itself"
# The boot window counts from this machine's real boot, long ago: the demo's window is wide.
"${vmrecover[@]}" --log-format text agent --boot-window 100000h --metrics-addr off >"$work/agent.out" 2>&1 &
agent_pid=$!
summary=vmrecover-summary-harvester-node-1
for _ in $(seq 300); do
  kubectl -n harvester-system get configmap "$summary" -o json 2>/dev/null | grep -q 'after' && break
  kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.out" >&2; echo "demo: the agent stopped" >&2; exit 1; }
  sleep 0.2
done
kill "$agent_pid"; wait "$agent_pid" 2>/dev/null || true; agent_pid=""
kubectl -n harvester-system get configmap "$summary" -o json | grep -q 'after' \
  || { tail -20 "$work/agent.out" >&2; echo "demo: the agent did not finish following its VMs" >&2; exit 1; }
grep -E "boot check|recovered|after recovery" "$work/agent.out" | sed -E 's/^.*(INFO|WARN) //' | cut -c1-160

step "What is left (kubectl get vm,vmi -A)"
kubectl get vm,vmi -A
step "vmrecover status (after; exit 0 all fine, 3 some VM left for a person, 1 state unreadable)"
rc=0
"${vmrecover[@]}" status >"$work/status.txt" || rc=$?
cat "$work/status.txt"
[ "$rc" = 0 ] || [ "$rc" = 3 ] || { echo "demo: status exit code $rc" >&2; exit "$rc"; }
step "vmrecover status prod/vm-app-05: the VM that did not come back, and why"
{ "${vmrecover[@]}" status prod/vm-app-05 || true; } | sed -n '/last run/,$p'
step "vmrecover status --all-nodes: the whole site"
expect_0_or_3 "${vmrecover[@]}" status --all-nodes
printf '\nRun summary: %s\n' "$(grep -E '^last run:' "$work/status.txt" | sed 's/^last run: *//')"
