# Shared shell helpers for hack/*.sh. Source it; it sets strict mode.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
# shellcheck source=../versions.env
. "$HACK_DIR/versions.env"

CACHE_ROOT="${SDO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sharded-dataset-operator}"
K8S_BIN="$CACHE_ROOT/bin/k8s-v$K8S_VERSION"
ETCD_BIN="$CACHE_ROOT/bin/etcd-v$ETCD_VERSION"
AIS_BIN="$CACHE_ROOT/bin/ais-v$AIS_VERSION-etl-aws"  # aisnode built with tags dsort, mono, etl, aws
HELM_BIN="$CACHE_ROOT/bin/helm-v$HELM_VERSION"
COREDNS_BIN="$CACHE_ROOT/bin/coredns-v$COREDNS_VERSION"
VERSITYGW_BIN="$CACHE_ROOT/bin/versitygw-v$VERSITYGW_VERSION"
PAUSE_BIN="$CACHE_ROOT/bin/pause-$(cat "$HACK_DIR/tools/pause/main.go" | sha256sum | cut -c1-12)"
IMAGE_CACHE="$CACHE_ROOT/images"

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${LOG_TAG:-hack}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Go settings shared by every build: no toolchain download, no stray workspace, static binaries.
go_env() {
  export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
}

# wait_for DESCRIPTION TIMEOUT_S COMMAND...: poll COMMAND once a second until it succeeds.
wait_for() {
  local what=$1 timeout=$2; shift 2
  local start=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS - start >= timeout )); then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 1
  done
}

DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PAUSE_IMAGE="localhost/sdo-pause:1.0"
PAUSE_IMAGE_FILE="pause-$(basename "$PAUSE_BIN").tar"
PROJECT_IMAGE="${PROJECT_IMAGE:-localhost/sharded-dataset-operator:dev}"
TRANSFORMS_IMAGE="localhost/sds-example-transforms:dev"  # examples/transforms, FROM the project image
ETL_IMAGE="localhost/sdo-etl:dev"  # etl/Dockerfile: AIS ETL webservers
AISNODE_IMAGE="localhost/sdo-aisnode:$AIS_VERSION"  # aisnode (dsort mono etl aws) on the Debian base, run by StatefulSets
AISNODE_IMAGE_FILE="aisnode-$(basename "$AIS_BIN").tar"
AUTHN_IMAGE="localhost/sdo-ais-authn:$AIS_VERSION"  # the AIS AuthN server (AIS_AUTH=1), built from its Go module
VERSITYGW_IMAGE="localhost/sdo-versitygw:$VERSITYGW_VERSION"  # the S3 server (versitygw posix), built from its Go module
