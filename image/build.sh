#!/usr/bin/env bash
# Builds vmrecover's container image offline and exports it as a docker archive that RKE2
# imports from /var/lib/rancher/rke2/agent/images/ (docs/install.md):
#
#   image/build.sh            -> target/image/vmrecover-<version>.tar  (image localhost/vmrecover:<version>)
#
# Needs: rustup target x86_64-unknown-linux-musl, musl-tools (musl-gcc, for ring), podman
# (or buildah), and journalctl (Debian package systemd) whose binary and libraries go into the
# image. Nothing is pulled from a registry: the image starts FROM scratch.
# Environment: VMRECOVER_IMAGE_TARGET_DIR (cargo target dir, default target/image-build: a
# build of its own, so it never waits for another cargo's lock), VMRECOVER_IMAGE_OUT (default
# target/image), PODMAN (default podman; extra options may follow, e.g. "podman --root DIR").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
image="localhost/vmrecover:${version}"
target_dir=${VMRECOVER_IMAGE_TARGET_DIR:-target/image-build}
out_dir=${VMRECOVER_IMAGE_OUT:-target/image}
podman=${PODMAN:-podman}
triple=x86_64-unknown-linux-musl

echo "image: building the static binary ($triple, release) in $target_dir" >&2
CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc} \
  CARGO_TARGET_DIR="$target_dir" \
  cargo build --release --locked --target "$triple" -p vmrecover --bin vmrecover
bin="$target_dir/$triple/release/vmrecover"
if ldd "$bin" 2>/dev/null | grep -q '=>'; then
  echo "image: $bin is not static:" >&2; ldd "$bin" >&2; exit 1
fi

stage="$out_dir/stage"
rm -rf "$stage" && mkdir -p "$stage/rootfs/usr/local/bin" "$stage/rootfs/usr/bin" "$stage/rootfs/tmp" "$stage/rootfs/etc"
chmod 1777 "$stage/rootfs/tmp"
install -m 0755 "$bin" "$stage/rootfs/usr/local/bin/vmrecover"

# A dynamic program with exactly the libraries ldd resolves for it, at the same paths.
copy_with_libs() {
  local prog=$1
  install -D -m 0755 "$prog" "$stage/rootfs$prog"
  ldd "$prog" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\/.*ld-linux/ {print $1}' | while read -r lib; do
    install -D -m 0644 "$(readlink -f "$lib")" "$stage/rootfs$lib"
  done
}
journalctl=$(command -v journalctl)
copy_with_libs "$(readlink -f "$journalctl")"
[ "$(readlink -f "$journalctl")" = /usr/bin/journalctl ] || { echo "image: journalctl is not /usr/bin/journalctl" >&2; exit 1; }
copy_with_libs /usr/bin/install
[ -e "$stage/rootfs/lib64/ld-linux-x86-64.so.2" ] || { echo "image: the dynamic loader was not staged" >&2; exit 1; }
chmod 0755 "$stage/rootfs/lib64/ld-linux-x86-64.so.2"
# The loader's cache, so the libraries are found wherever the distribution keeps them.
ldconfig -r "$stage/rootfs" 2>/dev/null || true
cp image/Containerfile "$stage/Containerfile"

echo "image: building $image FROM scratch" >&2
$podman build --pull=never --network=none --no-cache -t "$image" -f "$stage/Containerfile" "$stage" >&2
mkdir -p "$out_dir"
archive="$out_dir/vmrecover-${version}.tar"
rm -f "$archive"
$podman save --format docker-archive -o "$archive" "$image" >&2
echo "image: $image saved as $archive ($(du -h "$archive" | cut -f1))" >&2
echo "$archive"
