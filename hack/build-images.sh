#!/usr/bin/env bash
# Build the container images without Docker or a registry, and save them as OCI archives under the
# cache dir: the pause (sandbox) image and the project image (./Dockerfile, built with buildah from a
# locally bootstrapped Debian base that stands in for the public debian image).
# Usage: hack/build-images.sh [pause|base|project|transforms|etl|aisnode|authn ...]   (default: all). Prints nothing on stdout.
LOG_TAG=images
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

BUILDAH_ROOT="$CACHE_ROOT/buildah/root"
BUILDAH_RUNROOT="/run/sdo-buildah-$(sha256sum <<<"$CACHE_ROOT" | cut -c1-8)"
BASE_IMAGE="localhost/debian:$DEBIAN_SUITE-slim"
buildah() { command buildah --root "$BUILDAH_ROOT" --runroot "$BUILDAH_RUNROOT" --storage-driver vfs "$@"; }
mkdir -p "$IMAGE_CACHE"

image_exists() { buildah images --quiet "$1" >/dev/null 2>&1; }

build_pause() {
  "$HACK_DIR/build-binaries.sh" pause
  local out="$IMAGE_CACHE/$PAUSE_IMAGE_FILE"
  [[ -s "$out" ]] && { log "pause image: cached"; return; }
  local ctx; ctx=$(mktemp -d); cp "$PAUSE_BIN/pause" "$HACK_DIR/images/Dockerfile.pause" "$ctx/"
  buildah bud --quiet --isolation chroot -f "$ctx/Dockerfile.pause" -t "$PAUSE_IMAGE" "$ctx" >/dev/null
  buildah push --quiet "$PAUSE_IMAGE" "oci-archive:$out.tmp:$PAUSE_IMAGE" >/dev/null && mv "$out.tmp" "$out"
  rm -rf "$ctx"; log "pause image built: $PAUSE_IMAGE"
}

build_base() {
  if image_exists "$BASE_IMAGE"; then log "base image: cached"; return; fi
  local tarball="$IMAGE_CACHE/debian-$DEBIAN_SUITE-minbase.tar"
  if [[ ! -s "$tarball" ]]; then
    log "debootstrapping Debian $DEBIAN_SUITE (minbase)"
    local rootfs; rootfs=$(mktemp -d)
    debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$CACHE_ROOT/debootstrap.log" 2>&1 \
      || die "debootstrap failed, see $CACHE_ROOT/debootstrap.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  local c; c=$(buildah from scratch)
  buildah add --quiet "$c" "$tarball" / >/dev/null
  buildah config --cmd /bin/bash "$c"
  buildah commit --quiet --rm "$c" "$BASE_IMAGE" >/dev/null
  log "base image ready: $BASE_IMAGE"
}

build_project() {
  build_base
  local out="$IMAGE_CACHE/project.tar"
  log "building $PROJECT_IMAGE from ./Dockerfile"
  buildah bud --quiet --layers --isolation chroot \
    --build-arg "BASE=$BASE_IMAGE" --build-arg PIP_CERT=/run/host-ca.crt \
    -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
    -f "$REPO_ROOT/Dockerfile" -t "$PROJECT_IMAGE" "$REPO_ROOT" >"$CACHE_ROOT/project-build.log" 2>&1 \
    || { tail -30 "$CACHE_ROOT/project-build.log" >&2; die "image build failed"; }
  rm -f "$out.tmp"
  buildah push --quiet "$PROJECT_IMAGE" "oci-archive:$out.tmp:$PROJECT_IMAGE" >/dev/null && mv "$out.tmp" "$out"
  log "project image built: $PROJECT_IMAGE"
}

# The user-transform example (examples/transforms), built the way the README tells users to.
build_transforms() {
  local out="$IMAGE_CACHE/transforms.tar"
  buildah bud --quiet --layers --isolation chroot --build-arg "BASE=$PROJECT_IMAGE" \
    -f "$REPO_ROOT/examples/transforms/Dockerfile" -t "$TRANSFORMS_IMAGE" "$REPO_ROOT/examples/transforms" \
    >"$CACHE_ROOT/transforms-build.log" 2>&1 \
    || { tail -30 "$CACHE_ROOT/transforms-build.log" >&2; die "transforms image build failed"; }
  rm -f "$out.tmp"
  buildah push --quiet "$TRANSFORMS_IMAGE" "oci-archive:$out.tmp:$TRANSFORMS_IMAGE" >/dev/null && mv "$out.tmp" "$out"
  log "transforms example image built: $TRANSFORMS_IMAGE"
}

# The AIS ETL image (etl/Dockerfile, on the Debian base): AIS starts it as the transformer pods.
build_etl() {
  build_base
  local out="$IMAGE_CACHE/etl.tar"
  buildah bud --quiet --layers --isolation chroot --build-arg "BASE=$BASE_IMAGE" \
    --build-arg PIP_CERT=/run/host-ca.crt -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
    -f "$REPO_ROOT/etl/Dockerfile" -t "$ETL_IMAGE" "$REPO_ROOT" >"$CACHE_ROOT/etl-build.log" 2>&1 \
    || { tail -30 "$CACHE_ROOT/etl-build.log" >&2; die "etl image build failed"; }
  rm -f "$out.tmp"
  buildah push --quiet "$ETL_IMAGE" "oci-archive:$out.tmp:$ETL_IMAGE" >/dev/null && mv "$out.tmp" "$out"
  log "etl image built: $ETL_IMAGE"
}

# binary_image BINARY IMAGE ARCHIVE [USER]: a Go binary alone on the Debian base, as /usr/local/bin/<name> and its
# entrypoint, saved as an OCI archive for hack/cluster.sh to import.
binary_image() {
  local bin=$1 image=$2 out=$3 user=${4:-} name c
  name=$(basename "$bin")
  build_base
  c=$(buildah from "$BASE_IMAGE")
  buildah copy --quiet --chmod 0755 "$c" "$bin" "/usr/local/bin/$name" >/dev/null
  buildah config --cmd '' --entrypoint "[\"/usr/local/bin/$name\"]" ${user:+--user "$user"} "$c"
  buildah commit --quiet --rm "$c" "$image" >/dev/null
  rm -f "$out.tmp"
  buildah push --quiet "$image" "oci-archive:$out.tmp:$image" >/dev/null && mv "$out.tmp" "$out"
  log "$name image built: $image"
}

# aisnode (AIS proxy and target, hack/cluster.sh runs them as StatefulSets).
build_aisnode() {
  "$HACK_DIR/build-binaries.sh" ais
  local out="$IMAGE_CACHE/$AISNODE_IMAGE_FILE"
  [[ -s "$out" ]] && { log "aisnode image: cached"; return; }
  binary_image "$AIS_BIN/aisnode" "$AISNODE_IMAGE" "$out"
}

# The AIS AuthN server (hack/cluster.sh with AIS_AUTH=1), run as nobody.
build_authn() {
  "$HACK_DIR/build-binaries.sh" authn
  binary_image "$AIS_BIN/authn" "$AUTHN_IMAGE" "$IMAGE_CACHE/authn.tar" 65534:65534
}

# The local cluster's S3 server (versitygw over a hostPath directory).
build_versitygw() {
  "$HACK_DIR/build-binaries.sh" versitygw
  local out="$IMAGE_CACHE/versitygw-v$VERSITYGW_VERSION.tar"
  [[ -s "$out" ]] && { log "versitygw image: cached"; return; }
  binary_image "$VERSITYGW_BIN/versitygw" "$VERSITYGW_IMAGE" "$out"
}

# A rebuild re-tags the image and leaves the previous one untagged; with the vfs driver every such image is
# full copies of its layers (~1 GB), so each `make image` used to leave ~1 GB behind (21 GB after a day of
# builds, until AIS on the same disk passed its capacity high watermark). Untagged images nothing builds on
# are dropped; the layer cache that tagged images build on stays.
prune_untagged() {
  local n; n=$(buildah images --quiet --filter dangling=true 2>/dev/null | wc -l)
  (( n == 0 )) && return
  # a build that failed halfway leaves its working containers, which hold their images: those are kept
  if buildah rmi --prune >/dev/null 2>&1; then log "removed $n untagged image(s) of earlier builds"
  else log "some untagged images are still held by containers of failed builds (buildah containers): kept"; fi
}

targets=("$@"); (( ${#targets[@]} )) || targets=(pause aisnode versitygw project transforms etl)
for t in "${targets[@]}"; do start=$SECONDS; "build_$t"; log "$t done in $((SECONDS - start))s"; done
prune_untagged
