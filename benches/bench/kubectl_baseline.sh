#!/usr/bin/env bash
# The manual recovery an operator does with kubectl, as the KubeVirt and Harvester docs
# describe it, used as the recovery benchmark's baseline (benches/recovery_scale.rs):
#   1. list the VMIs on the node, keep those being deleted;
#   2. list the virt-launcher pods on the node, force-delete the Terminating ones;
#   3. for each stuck VMI, then its VM: kubectl patch --type=json removing the finalizers.
# It proves nothing about the node (no process or disk check): it is the fast, unsafe way.
#
# Usage: KUBECONFIG=... [KUBECTL=kubectl] kubectl_baseline.sh NODE
# Prints "pods N vmis N vms N" (objects changed) on stdout.
set -euo pipefail

node=${1:?usage: kubectl_baseline.sh NODE}
k=${KUBECTL:-kubectl}
remove_finalizers='[{"op":"remove","path":"/metadata/finalizers"}]'
deleting='{range .items[?(@.metadata.deletionTimestamp)]}{.metadata.namespace}{" "}{.metadata.name}{"\n"}{end}'

stuck=$("$k" get vmi -A -l "kubevirt.io/nodeName=$node" -o jsonpath="$deleting")
pods=$("$k" get pods -A -l kubevirt.io=virt-launcher --field-selector "spec.nodeName=$node" -o jsonpath="$deleting")

n_pods=0 n_vmis=0 n_vms=0
while read -r ns name; do
    [ -n "${name:-}" ] || continue
    # --force prints a warning on stderr; the exit code still tells failure.
    "$k" delete pod -n "$ns" "$name" --grace-period=0 --force >/dev/null 2>&1
    n_pods=$((n_pods + 1))
done <<<"$pods"

while read -r ns name; do
    [ -n "${name:-}" ] || continue
    "$k" patch vmi -n "$ns" "$name" --type=json -p "$remove_finalizers" >/dev/null
    n_vmis=$((n_vmis + 1))
    "$k" patch vm -n "$ns" "$name" --type=json -p "$remove_finalizers" >/dev/null
    n_vms=$((n_vms + 1))
done <<<"$stuck"

echo "pods $n_pods vmis $n_vmis vms $n_vms"
