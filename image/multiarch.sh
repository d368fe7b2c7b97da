#!/usr/bin/env bash
# Builds the amd64 and arm64 images (image/build.sh) and joins them in one multi-arch OCI
# index, saved as an OCI archive:
#
#   image/multiarch.sh   -> target/image/vmrecover-<version>-multiarch.oci.tar
#
# A registry takes the index as it is (`skopeo copy --all oci-archive:... docker://REGISTRY/...`);
# an air-gapped node imports the archive of its own architecture (vmrecover-<version>.tar or
# vmrecover-<version>-arm64.tar) as docs/install.md says. Needs what image/build.sh needs for
# both architectures. Prints the archive's path last.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out_dir=${VMRECOVER_IMAGE_OUT:-target/image}
podman=${PODMAN:-podman}

# The builds and the index under build.sh's lock, so no other build rewrites an archive meanwhile.
target_dir=${VMRECOVER_IMAGE_TARGET_DIR:-target/image-build}
mkdir -p "$out_dir" "$target_dir"
exec 9>"$target_dir/.image-build.lock"
flock 9
export VMRECOVER_IMAGE_LOCKED=1
amd64=$(bash image/build.sh --arch amd64 | tail -1)
arm64=$(bash image/build.sh --arch arm64 | tail -1)

list="localhost/vmrecover-index:${version}"
$podman manifest rm "$list" >/dev/null 2>&1 || true
$podman manifest create "$list" >&2
$podman manifest add "$list" "docker-archive:$amd64" >&2
$podman manifest add "$list" "docker-archive:$arm64" >&2
archive="$out_dir/vmrecover-${version}-multiarch.oci.tar"
rm -f "$archive"
$podman manifest push --all --format oci "$list" "oci-archive:$archive:localhost/vmrecover:${version}" >&2
$podman manifest rm "$list" >/dev/null 2>&1 || true
echo "image: the amd64 and arm64 images in one OCI index: $archive ($(du -h "$archive" | cut -f1))" >&2
echo "$archive"
