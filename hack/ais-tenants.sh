#!/usr/bin/env bash
# Two tenants of the AuthN-enabled local AIS (hack/cluster.sh up with AIS_AUTH=1), each with a namespace, two
# buckets of its own and a token that may use only those buckets (no cluster rights, no dSort):
#
#   tenant   namespace   buckets                      token Secret (labelled shardeddataset.dev/ais-token=true)
#   team-a   team-a      team-a-raw, team-a-out       team-a/ais-token (key: token)
#   team-b   team-b      team-b-raw, team-b-out       team-b/ais-token
#
# A ShardedDataset in team-a then sets spec.ais.endpoint: http://ais-auth-proxy.ais:56080 and
# spec.ais.tokenSecretRef: {name: ais-token}; the operator needs that endpoint in ais.allowedEndpoints.
# Usage: hack/ais-tenants.sh [TENANT ...]   (default: team-a team-b); run again to issue fresh tokens.
LOG_TAG=tenants
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
eval "$("$HACK_DIR/cluster.sh" env)"
[[ -n "${AIS_AUTHN_URL:-}" ]] || die "no AuthN in the local cluster: AIS_AUTH=1 hack/cluster.sh up"
kubectl() { "$K8S_BIN/kubectl" "$@"; }
tenants=("$@"); (( ${#tenants[@]} )) || tenants=(team-a team-b)
for t in "${tenants[@]}"; do
  token=$(python3 "$HACK_DIR/ais_auth.py" tenant "$t" --bucket "$t-raw" --bucket "$t-out")
  kubectl create namespace "$t" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$t" create secret generic ais-token --from-literal=token="$token" --dry-run=client -o yaml \
    | kubectl label --local -f - shardeddataset.dev/ais-token=true -o yaml | kubectl apply -f - >/dev/null
  log "tenant $t: buckets ais://$t-raw, ais://$t-out; token in Secret $t/ais-token"
done
