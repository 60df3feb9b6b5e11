#!/usr/bin/env bash
# Install the Debian packages the local cluster needs (only those missing). Safe to run repeatedly.
LOG_TAG=deps
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

PACKAGES=(containerd runc buildah debootstrap containernetworking-plugins iptables conntrack
          openssl curl jq iproute2 procps psmisc lua5.4 ca-certificates)
missing=()
for p in "${PACKAGES[@]}"; do [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == *"ok installed"* ]] || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  [[ $EUID -eq 0 ]] || die "need root to install packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's containerd package may start its own daemon (systemd); the cluster runs its own instance, so
# that one is left alone. Go must be present to build the pinned binaries.
command -v go >/dev/null || die "Go (>= 1.26) is required to build the cluster binaries"
