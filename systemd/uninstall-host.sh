#!/usr/bin/env bash
# Removes from one host what installing vmrecover put there (docs/install.md, Uninstall): the
# units, the binary, the configuration, the host agent's kubeconfig, the state (boot records,
# intents, reports; kept with --keep-state), the image archive RKE2 re-imports at every start,
# the imported image, and the CloudInit's file in /oem. Run it on each node as root AFTER the
# chart is uninstalled (else the DaemonSet's init container writes the binary back, and the
# CloudInit rewrites the units at the next boot).
#
#   uninstall-host.sh [--root DIR] [--state-dir DIR] [--keep-state] [--dry-run]
#
# --root DIR: the host's / is at DIR (tests; a rescue system); then nothing is stopped and no
# image is removed from containerd, only files under DIR.
set -euo pipefail

root=/
state=/usr/local/vmrecover
keep_state=0
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$2; shift 2 ;;
    --state-dir) state=$2; shift 2 ;;
    --keep-state) keep_state=1; shift ;;
    --dry-run) dry=1; shift ;;
    *) echo "uninstall-host.sh: unknown option $1" >&2; exit 1 ;;
  esac
done
root=${root%/}

run() {
  echo "+ $*"
  [ "$dry" = 1 ] || "$@"
}

if [ -z "$root" ] && command -v systemctl >/dev/null; then
  for unit in vmrecover.service vmrecover-boot.service; do
    # Stopping vmrecover-boot marks this boot cleanly stopped: harmless, the records go too.
    run systemctl disable --now "$unit" || true
  done
fi
for f in /etc/systemd/system/vmrecover.service /etc/systemd/system/vmrecover-boot.service \
         /oem/99_vmrecover.yaml; do
  if [ -e "$root$f" ]; then run rm -f "$root$f"; fi
done
if [ -z "$root" ] && command -v systemctl >/dev/null; then
  run systemctl daemon-reload || true
fi

if [ "$keep_state" = 1 ]; then
  for f in bin config.yaml kubeconfig; do
    if [ -e "$root$state/$f" ]; then run rm -rf "$root$state/$f"; fi
  done
else
  if [ -e "$root$state" ]; then run rm -rf "$root$state"; fi
fi

shopt -s nullglob
for tar in "$root"/var/lib/rancher/rke2/agent/images/vmrecover-*.tar; do
  run rm -f "$tar"
done
ctr=/var/lib/rancher/rke2/bin/ctr
if [ -z "$root" ] && [ -x "$ctr" ]; then
  images=$("$ctr" --address /run/k3s/containerd/containerd.sock -n k8s.io images ls -q |
    grep -E '(^|/)vmrecover[:@]' || true)
  for image in $images; do
    run "$ctr" --address /run/k3s/containerd/containerd.sock -n k8s.io images rm "$image"
  done
fi
if [ "$dry" = 1 ]; then
  echo "dry run: the commands above would remove vmrecover from ${root:-/}"
else
  echo "vmrecover removed from ${root:-/}"
fi
