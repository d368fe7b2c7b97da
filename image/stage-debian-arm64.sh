#!/usr/bin/env bash
# Stages Debian's arm64 programs, with exactly the shared libraries they need, into an image's
# root filesystem (called by image/build.sh --arch arm64 on an amd64 Debian machine):
#
#   image/stage-debian-arm64.sh SYSROOT ROOTFS PROGRAM...
#
# SYSROOT: where the arm64 packages are downloaded (apt-get download, no installation) and
# unpacked (dpkg-deb -x). Each PROGRAM (an absolute path inside the packages) is copied into
# ROOTFS with the libraries its ELF NEEDED entries name, found in the sysroot the way
# Debian's loader finds them (the program's RUNPATH, then the multiarch directories), and the
# program interpreter; a library that cannot be found stops the build naming it. The packages
# are those of bookworm's journalctl and install; a release that needs another library fails
# here by name, never at the node. When qemu-aarch64-static is installed each program runs
# once (`--version`) from ROOTFS.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 SYSROOT ROOTFS PROGRAM..." >&2; exit 2; }
sysroot=$1 rootfs=$2
shift 2

packages=(systemd libsystemd-shared coreutils libc6 libcap2 libacl1 libattr1 libblkid1
  libgcrypt20 libgpg-error0 libip4tc2 libkmod2 liblz4-1 liblzma5 libmount1 libpcre2-8-0
  libseccomp2 libselinux1 libssl3 libzstd1 libcrypt1 libaudit1 libcap-ng0 libpam0g libgmp10)

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  if [ "$(id -u)" = 0 ]; then
    echo "image: adding the arm64 architecture to dpkg (apt-get update follows)" >&2
    dpkg --add-architecture arm64
    apt-get update -q >&2
  else
    echo "image: dpkg knows no arm64 packages: run as root 'dpkg --add-architecture arm64 && apt-get update'" >&2
    exit 1
  fi
fi

debs="$sysroot/debs" tree="$sysroot/tree"
mkdir -p "$debs"
missing=()
for p in "${packages[@]}"; do
  compgen -G "$debs/${p}_*_arm64.deb" >/dev/null || missing+=("$p:arm64")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "image: downloading ${#missing[@]} arm64 packages from Debian" >&2
  # apt's sandbox user cannot write everywhere; the download itself is what matters.
  (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >&2) ||
    (cd "$debs" && apt-get download -q "${missing[@]}" >&2)
fi
rm -rf "$tree" && mkdir -p "$tree"
for deb in "$debs"/*_arm64.deb; do dpkg-deb -x "$deb" "$tree"; done

# Where PATH is in the unpacked packages: bookworm's packages still ship /bin and /lib, which
# a merged-/usr system (and this image) also reaches as /usr/bin and /usr/lib.
in_tree() {
  local path=$1
  if [ -e "$tree$path" ] || [ -L "$tree$path" ]; then printf '%s\n' "$tree$path"; return; fi
  case $path in
    /usr/bin/* | /usr/sbin/* | /usr/lib/*) printf '%s\n' "$tree${path#/usr}" ;;
    /bin/* | /sbin/* | /lib/*) printf '%s\n' "$tree/usr$path" ;;
    *) printf '%s\n' "$tree$path" ;;
  esac
}

# One path inside the image for PATH, following symlinks in the packages.
resolve() {
  local path=$1 hops=0
  while [ -L "$(in_tree "$path")" ] && [ $hops -lt 16 ]; do
    local target
    target=$(readlink "$(in_tree "$path")")
    case $target in /*) path=$target ;; *) path=$(dirname "$path")/$target ;; esac
    path=$(realpath -m -s "$path")
    hops=$((hops + 1))
  done
  printf '%s\n' "$path"
}

# Copies PATH (inside the sysroot) and every symlink on the way to its file.
copy_in() {
  local path=$1 src
  while [ -L "$(in_tree "$path")" ]; do
    mkdir -p "$rootfs$(dirname "$path")"
    cp -P "$(in_tree "$path")" "$rootfs$path"
    local target
    target=$(readlink "$(in_tree "$path")")
    case $target in /*) path=$target ;; *) path=$(realpath -m -s "$(dirname "$path")/$target") ;; esac
  done
  src=$(in_tree "$path")
  [ -f "$src" ] || { echo "image: $path is not in the arm64 packages" >&2; exit 1; }
  install -D -m "$( [ -x "$src" ] && echo 0755 || echo 0644 )" "$src" "$rootfs$path"
}

declare -A done_libs=()
find_lib() {
  local name=$1 runpath=$2 dir
  for dir in ${runpath//:/ } /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu /lib /usr/lib; do
    [ -e "$(in_tree "$dir/$name")" ] && { printf '%s\n' "$dir/$name"; return 0; }
  done
  return 1
}

stage_elf() {
  local path=$1 file runpath needed lib
  file=$(resolve "$path")
  copy_in "$path"
  runpath=$(readelf -d "$(in_tree "$file")" | sed -n 's/.*(R\(UN\)\?PATH).*\[\(.*\)\]/\2/p' | head -1)
  needed=$(readelf -d "$(in_tree "$file")" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  for lib in $needed; do
    [ -n "${done_libs[$lib]:-}" ] && continue
    done_libs[$lib]=1
    local found
    found=$(find_lib "$lib" "$runpath") ||
      { echo "image: $path needs $lib, which none of the arm64 packages has (add its package in $0)" >&2; exit 1; }
    stage_elf "$found"
  done
}

for prog in "$@"; do
  stage_elf "$prog"
  interp=$(readelf -l "$(in_tree "$(resolve "$prog")")" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
  [ -n "$interp" ] && copy_in "$interp"
done

if command -v qemu-aarch64-static >/dev/null; then
  for prog in "$@"; do
    out=$(qemu-aarch64-static -L "$rootfs" "$rootfs$prog" --version 2>&1 | head -1) ||
      { echo "image: $prog does not run from the staged arm64 root: $out" >&2; exit 1; }
    echo "image: arm64 $prog runs: $out" >&2
  done
fi
