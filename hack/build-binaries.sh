#!/usr/bin/env bash
# Build (or reuse from the cache) every binary the local cluster needs, at the versions pinned in
# hack/versions.env: the Kubernetes components, etcd, aisnode (with dSort and ETL) and helm.
# Usage: hack/build-binaries.sh [k8s|etcd|ais|authn|helm ...]   (default: all but authn, built when AIS_AUTH=1)
LOG_TAG=build
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
go_env

have() { local dir=$1; shift; for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done; }

build_k8s() {
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
  if have "$K8S_BIN" "${bins[@]}"; then log "kubernetes v$K8S_VERSION: cached"; return; fi
  log "building kubernetes v$K8S_VERSION (cold build: 10-25 min on 2 cores)"
  local minor; minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  local ldf="-s -w"
  ldf+=" -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
  ldf+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldf+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldf+=" -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
  ldf+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
  local tmp="$K8S_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HACK_DIR/tools/k8s" && go build -trimpath -ldflags "$ldf" -o "$tmp/" \
    "${bins[@]/#/k8s.io/kubernetes/cmd/}")
  rm -rf "$K8S_BIN"; mv "$tmp" "$K8S_BIN"
}

build_etcd() {
  if have "$ETCD_BIN" etcd; then log "etcd v$ETCD_VERSION: cached"; return; fi
  log "building etcd v$ETCD_VERSION"
  local tmp="$ETCD_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HACK_DIR/tools/k8s" && go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$ETCD_BIN"; mv "$tmp" "$ETCD_BIN"
}

build_ais() {
  if have "$AIS_BIN" aisnode; then log "aisnode v$AIS_VERSION: cached"; return; fi
  log "building aisnode v$AIS_VERSION with tags 'dsort mono etl aws'"
  local tmp="$AIS_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HACK_DIR/tools/ais" && go build -trimpath -tags "dsort mono etl aws" \
    -ldflags "-s -w -X main.build=v$AIS_VERSION -X main.buildtime=1970-01-01T00:00:00Z" \
    -o "$tmp/aisnode" github.com/NVIDIA/aistore/cmd/aisnode)
  rm -rf "$AIS_BIN"; mv "$tmp" "$AIS_BIN"
}

build_authn() { # the AIS AuthN server (hack/cluster.sh with AIS_AUTH=1), same module and version as aisnode
  if have "$AIS_BIN" authn; then log "authn v$AIS_VERSION: cached"; return; fi
  log "building authn v$AIS_VERSION"
  mkdir -p "$AIS_BIN"
  (cd "$HACK_DIR/tools/ais" && go build -trimpath -tags mono \
    -ldflags "-s -w -X main.build=v$AIS_VERSION -X main.buildtime=1970-01-01T00:00:00Z" \
    -o "$AIS_BIN/authn.tmp" github.com/NVIDIA/aistore/cmd/authn)
  mv "$AIS_BIN/authn.tmp" "$AIS_BIN/authn"
}

build_versitygw() { # the local cluster's S3 server: an S3 gateway over a local directory (hack/cluster.sh)
  if have "$VERSITYGW_BIN" versitygw; then log "versitygw v$VERSITYGW_VERSION: cached"; return; fi
  log "building versitygw v$VERSITYGW_VERSION"
  local tmp="$VERSITYGW_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HACK_DIR/tools/versitygw" && go build -trimpath -ldflags "-s -w" -o "$tmp/versitygw" \
    github.com/versity/versitygw/cmd/versitygw)
  rm -rf "$VERSITYGW_BIN"; mv "$tmp" "$VERSITYGW_BIN"
}

build_helm() {
  if have "$HELM_BIN" helm; then log "helm v$HELM_VERSION: cached"; return; fi
  log "building helm v$HELM_VERSION"
  local minor; minor=$(cut -d. -f2 <<<"$K8S_VERSION")
  local p=helm.sh/helm/v4
  local ldf="-s -w -X $p/internal/version.version=v$HELM_VERSION"
  ldf+=" -X $p/pkg/chart/common.k8sVersionMajor=1 -X $p/pkg/chart/common.k8sVersionMinor=$minor"
  ldf+=" -X $p/pkg/chart/v2/lint/rules.k8sVersionMajor=1 -X $p/pkg/chart/v2/lint/rules.k8sVersionMinor=$minor"
  local tmp="$HELM_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HACK_DIR/tools/helm" && go build -trimpath -ldflags "$ldf" -o "$tmp/helm" $p/cmd/helm)
  rm -rf "$HELM_BIN"; mv "$tmp" "$HELM_BIN"
}

build_coredns() {
  if have "$COREDNS_BIN" coredns; then log "coredns v$COREDNS_VERSION: cached"; return; fi
  log "building coredns v$COREDNS_VERSION"
  local tmp="$COREDNS_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HACK_DIR/tools/coredns" && go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" github.com/coredns/coredns)
  rm -rf "$COREDNS_BIN"; mv "$tmp" "$COREDNS_BIN"
}

build_pause() {
  if have "$PAUSE_BIN" pause; then return; fi
  local tmp="$PAUSE_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HACK_DIR/tools/pause" && go build -trimpath -ldflags "-s -w" -o "$tmp/pause" .)
  rm -rf "$PAUSE_BIN"; mv "$tmp" "$PAUSE_BIN"
}

targets=("$@"); (( ${#targets[@]} )) || targets=(pause etcd ais helm coredns versitygw k8s)
for t in "${targets[@]}"; do
  start=$SECONDS
  "build_$t"
  log "$t done in $((SECONDS - start))s"
done
