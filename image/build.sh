#!/usr/bin/env bash
# Builds vmrecover's container image offline and exports it as a docker archive that RKE2
# imports from /var/lib/rancher/rke2/agent/images/ (docs/install.md):
#
#   image/build.sh                -> target/image/vmrecover-<version>.tar        (amd64)
#   image/build.sh --arch arm64   -> target/image/vmrecover-<version>-arm64.tar  (arm64)
#
# Both archives name the image localhost/vmrecover:<version>, so the chart is the same on an
# amd64 and an arm64 node; image/multiarch.sh joins them in one OCI index. The image carries
# the OCI labels version, revision (git commit), created and, once the code is published,
# source (VMRECOVER_IMAGE_SOURCE, else Chart.yaml's first `sources` entry).
#
# Needs, amd64: rustup target x86_64-unknown-linux-musl, musl-tools (musl-gcc, for ring),
# podman (or buildah), and journalctl (Debian package systemd) whose binary and libraries go
# into the image. arm64 (cross-built on an amd64 Debian machine): rustup target
# aarch64-unknown-linux-musl, cargo-zigbuild (crates.io) with zig (the `ziglang` PyPI package
# or a zig on PATH), and Debian's arm64 packages of journalctl and its libraries (fetched with
# apt-get download: needs `dpkg --add-architecture arm64 && apt-get update`, done here when
# run as root). Nothing is pulled from a registry: the image starts FROM scratch.
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

arch=amd64
while [ $# -gt 0 ]; do
  case $1 in
    --arch) arch=${2:-}; shift 2 ;;
    --arch=*) arch=${1#--arch=}; shift ;;
    *) echo "image: unknown argument $1 (usage: image/build.sh [--arch amd64|arm64])" >&2; exit 2 ;;
  esac
done
case $arch in
  amd64) triple=x86_64-unknown-linux-musl; suffix=""; loader=/lib64/ld-linux-x86-64.so.2 ;;
  arm64) triple=aarch64-unknown-linux-musl; suffix="-arm64"; loader=/lib/ld-linux-aarch64.so.1 ;;
  *) echo "image: --arch $arch: only amd64 and arm64 are built" >&2; exit 2 ;;
esac
if [ "$arch" = arm64 ] && [ "$(uname -m)" != x86_64 ]; then
  echo "image: the arm64 image is cross-built on an x86_64 machine (this is $(uname -m))" >&2; exit 2
fi

# One build at a time (two tests, or multiarch.sh and a test, may start it together): every
# build tags the same podman name and saves it right after, so two at once could swap images.
# The lock lives in the cargo target directory they share; image/multiarch.sh holds it for
# both builds and the index (VMRECOVER_IMAGE_LOCKED=1).
mkdir -p "$out_dir" "$target_dir"
if [ -z "${VMRECOVER_IMAGE_LOCKED:-}" ]; then
  exec 9>"$target_dir/.image-build.lock"
  flock 9
fi

# The source label names where the code is published: VMRECOVER_IMAGE_SOURCE, else Chart.yaml's
# first `sources` entry; with neither (the repository is not public yet) there is no label.
source_url=${VMRECOVER_IMAGE_SOURCE:-$(awk '/^sources:/{f=1; next} f && /^ *- /{print $2; exit}' charts/vmrecover/Chart.yaml)}
source_label=()
if [ -n "$source_url" ]; then
  source_label=(--label "org.opencontainers.image.source=$source_url")
else
  echo "image: no source URL (set VMRECOVER_IMAGE_SOURCE or Chart.yaml sources): no source label" >&2
fi
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then revision="$revision-dirty"; fi
created=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" +%Y-%m-%dT%H:%M:%SZ)

echo "image: building the static binary ($triple, release) in $target_dir" >&2
if [ "$arch" = amd64 ]; then
  CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc} \
    CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --locked --target "$triple" -p vmrecover --bin vmrecover
else
  command -v cargo-zigbuild >/dev/null || { echo "image: no cargo-zigbuild (cargo install --locked cargo-zigbuild)" >&2; exit 1; }
  # cargo-zigbuild finds zig on PATH or as `python3 -m ziglang` (the repository's .venv has it).
  [ -x .venv/bin/python3 ] && export PATH="$PWD/.venv/bin:$PATH"
  command -v zig >/dev/null || python3 -m ziglang version >/dev/null 2>&1 ||
    { echo "image: no zig (pip install ziglang, or a zig on PATH)" >&2; exit 1; }
  CARGO_TARGET_DIR="$target_dir" cargo zigbuild --release --locked --target "$triple" -p vmrecover --bin vmrecover
fi
bin="$target_dir/$triple/release/vmrecover"
if readelf -l "$bin" | grep -q 'INTERP'; then
  echo "image: $bin is not static (it names a program interpreter)" >&2; exit 1
fi

stage="$out_dir/stage-$arch"
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
if [ "$arch" = amd64 ]; then
  journalctl=$(command -v journalctl)
  copy_with_libs "$(readlink -f "$journalctl")"
  [ "$(readlink -f "$journalctl")" = /usr/bin/journalctl ] || { echo "image: journalctl is not /usr/bin/journalctl" >&2; exit 1; }
  copy_with_libs /usr/bin/install
else
  # Debian's arm64 journalctl and install with the libraries they need (ELF NEEDED, resolved
  # in a sysroot of the packages' files), checked under qemu-user-static when it is there.
  bash image/stage-debian-arm64.sh "$target_dir/debian-arm64" "$stage/rootfs" /usr/bin/journalctl /usr/bin/install
fi
[ -e "$stage/rootfs$loader" ] || { echo "image: the dynamic loader $loader was not staged" >&2; exit 1; }
chmod 0755 "$(readlink -f "$stage/rootfs$loader")"
# The loader's cache, so the libraries are found wherever the distribution keeps them.
[ "$arch" = amd64 ] && { ldconfig -r "$stage/rootfs" 2>/dev/null || true; }
cp image/Containerfile "$stage/Containerfile"

echo "image: building $image ($arch) FROM scratch" >&2
$podman build --pull=never --network=none --no-cache --platform "linux/$arch" \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  "${source_label[@]}" \
  --label "org.opencontainers.image.created=$created" \
  -t "$image" -f "$stage/Containerfile" "$stage" >&2
mkdir -p "$out_dir"
archive="$out_dir/vmrecover-${version}${suffix}.tar"
rm -f "$archive"
$podman save --format docker-archive -o "$archive" "$image" >&2
echo "image: $image saved as $archive ($(du -h "$archive" | cut -f1))" >&2
echo "$archive"
