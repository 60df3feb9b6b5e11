#!/usr/bin/env bash
# A real single-node Kubernetes + AIStore cluster on this machine, built from source (no Docker, no kind).
#
#   hack/cluster.sh up       build/reuse binaries and images, start everything, wait until healthy
#   hack/cluster.sh down     stop everything and remove all state (also cleans up after a killed run)
#   hack/cluster.sh status   health of every component (exit 1 if any is unhealthy)
#   hack/cluster.sh env      shell exports for the host: KUBECONFIG, AIS_ENDPOINT, PATH (kubectl, helm)
#   hack/cluster.sh load-images   import the freshly built images into the node's containerd
#
# Layout (see docs/local-cluster.md): state, certificates, kubeconfig and logs live under $SDO_CLUSTER_DIR
# (default /var/lib/sharded-dataset-operator/cluster); every component listens on loopback or on the
# cluster bridge sdo0 (10.244.0.1), never on an outside interface. Must run as root.
LOG_TAG=cluster
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

STATE="${SDO_CLUSTER_DIR:-/var/lib/sharded-dataset-operator/cluster}"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
PKI="$STATE/pki"
KUBECONFIG_PATH="$STATE/kubeconfig"
NODE_NAME="${SDO_NODE_NAME:-sdo-node}"
BRIDGE=sdo0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/24
APISERVER_SVC_IP=10.96.0.1
ETCD_PORT=23790
CONTAINERD_ROOT=/var/lib/sdo-containerd
CONTAINERD_STATE=/run/sdo-containerd
CONTAINERD_SOCK="$CONTAINERD_STATE/containerd.sock"
KUBELET_ROOT=/var/lib/sdo-kubelet
AIS_TARGETS="${AIS_TARGETS:-2}"
AIS_PROXY_PORT=51080
AIS_ENDPOINT_URL="http://$NODE_IP:$AIS_PROXY_PORT"
AIS_DATA="${SDO_AIS_DATA_DIR:-$STATE/ais}"
# AIS_AUTH=1: a second AIS cluster (1 proxy + 1 target) that requires AuthN tokens, and the AuthN server as a
# pod (docs/local-cluster.md); the e2e tenancy tests run on it. The first cluster stays without AuthN.
AIS_AUTH="${AIS_AUTH:-0}"
PROMOTE_DIR=/var/lib/ais/promote  # tools/sds_tools/exampledata.py PROMOTE_ROOT
AIS_AUTH_PORT=56080
AIS_AUTH_ENDPOINT_URL="http://$NODE_IP:$AIS_AUTH_PORT"
AIS_AUTH_DATA="$STATE/ais-auth"
AUTHN_DIR="$STATE/authn"
AUTHN_PORT=52001
OPERATOR_NS=sharded-dataset-operator
ADMIN_SECRET=sharded-dataset-operator-ais-admin
GUARD_CHAIN=SDO-GUARD
# A real S3 server (versitygw, an S3 gateway over a directory) as a pod on the node's bridge address: the
# backend of AIS's s3:// buckets (aisnode is built with the `aws` tag) and where tests write S3 data directly.
S3_PORT=7070
S3_ENDPOINT_URL="http://$NODE_IP:$S3_PORT"
S3_DIR="$STATE/s3"
S3_REGION=us-east-1
S3_SECRET=ais-s3-credentials  # in namespaces ais (the targets) and s3 (the server)

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
ctr() { command ctr --address "$CONTAINERD_SOCK" "$@"; }

# ---------------------------------------------------------------------------------------------- processes

start_proc() { # start_proc NAME CMD... : detached, logs to $LOGS/NAME.log, pid in $PIDS/NAME.pid
  local name=$1; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

proc_alive() { [[ -f "$PIDS/$1.pid" ]] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

stop_pids() { # stop_pids PID...: TERM, wait up to 10 s, then KILL
  local pids=("$@") p i
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for i in $(seq 1 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

stop_proc() { # stop_proc NAME [PATTERN]: by pid file, then any leftover process matching PATTERN
  local name=$1 pattern=${2:-} pids=()
  [[ -f "$PIDS/$name.pid" ]] && pids+=("$(cat "$PIDS/$name.pid")")
  if [[ -n "$pattern" ]]; then mapfile -t -O "${#pids[@]}" pids < <(pgrep -f -- "$pattern" || true); fi
  stop_pids "${pids[@]}"
  rm -f "$PIDS/$name.pid"
}

# ---------------------------------------------------------------------------------------------- preflight

preflight() {
  [[ $EUID -eq 0 ]] || die "must run as root (mounts, cgroups, network namespaces, iptables)"
  "$HACK_DIR/install-deps.sh"
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------- network

network_up() {
  sysctl -qw net.ipv4.ip_forward=1
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr replace "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Service IPs that kube-proxy has not (yet) translated must never leave the machine.
  ip route replace unreachable "$SERVICE_CIDR"
  # Pods may talk to each other, to this node and to Services, but nothing they send is forwarded out.
  iptables -N "$GUARD_CHAIN" 2>/dev/null || iptables -F "$GUARD_CHAIN"
  iptables -A "$GUARD_CHAIN" -s "$POD_CIDR" -o "$BRIDGE" -j RETURN
  iptables -A "$GUARD_CHAIN" -s "$POD_CIDR" -j REJECT
  iptables -C FORWARD -j "$GUARD_CHAIN" 2>/dev/null || iptables -I FORWARD 1 -j "$GUARD_CHAIN"
  mkdir -p "$STATE/cni/net.d"
  cat >"$STATE/cni/net.d/10-sdo.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "sdo",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
}

network_down() {
  local ns
  for ns in /var/run/netns/cni-*; do [[ -e $ns ]] && { ip netns del "$(basename "$ns")" 2>/dev/null || umount -l "$ns" 2>/dev/null; rm -f "$ns"; }; done
  ip link del "$BRIDGE" 2>/dev/null || true
  ip route del unreachable "$SERVICE_CIDR" 2>/dev/null || true
  while iptables -D FORWARD -j "$GUARD_CHAIN" 2>/dev/null; do :; done
  iptables -F "$GUARD_CHAIN" 2>/dev/null || true
  iptables -X "$GUARD_CHAIN" 2>/dev/null || true
  if [[ -x "$K8S_BIN/kube-proxy" ]]; then "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
}

# ---------------------------------------------------------------------------------------------- PKI

sign_cert() { # sign_cert NAME SUBJECT [SANS]
  local name=$1 subj=$2 sans=${3:-}
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  local ext="$PKI/$name.ext"
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [[ -n $sans ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$sans"
    else echo "extendedKeyUsage=clientAuth"; fi; } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

kubeconfig_file() { # kubeconfig_file PATH USER [token=T | cert=NAME]
  local path=$1 user=$2 cred=$3 auth
  case $cred in
    token=*) auth="    token: ${cred#token=}" ;;
    cert=*) auth="    client-certificate: $PKI/${cred#cert=}.crt
    client-key: $PKI/${cred#cert=}.key" ;;
  esac
  cat >"$path" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sdo
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
$auth
contexts:
- name: sdo
  context: {cluster: sdo, user: $user}
current-context: sdo
EOF
  chmod 600 "$path"
}

make_pki() {
  mkdir -p "$PKI"
  openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=sdo-local-ca" -days 365 -out "$PKI/ca.crt" 2>/dev/null
  sign_cert apiserver "/CN=kube-apiserver" \
    "IP:$NODE_IP,IP:127.0.0.1,IP:$APISERVER_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  sign_cert kubelet "/CN=$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
  sign_cert kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  local token; token=$(openssl rand -hex 24)
  echo "$token,admin,admin,system:masters" >"$PKI/tokens.csv"
  chmod 600 "$PKI"/*.key "$PKI/tokens.csv"
  kubeconfig_file "$KUBECONFIG_PATH" admin "token=$token"
  kubeconfig_file "$STATE/kubelet.kubeconfig" "system:node:$NODE_NAME" cert=kubelet-client
}

# ---------------------------------------------------------------------------------------------- control plane

start_etcd() {
  start_proc etcd "$ETCD_BIN/etcd" --name sdo --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster sdo=http://127.0.0.1:23800 --listen-metrics-urls http://127.0.0.1:23810 \
    --log-level warn --unsafe-no-fsync=true --quota-backend-bytes=4294967296
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  start_proc kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$NODE_IP" --secure-port=6443 --advertise-address="$NODE_IP" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --profiling=false --v=1
  wait_for "kube-apiserver /readyz" 90 curl -sf --cacert "$PKI/ca.crt" "https://$NODE_IP:6443/readyz"
}

start_controllers() {
  start_proc kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$KUBECONFIG_PATH" --authentication-kubeconfig="$KUBECONFIG_PATH" \
    --authorization-kubeconfig="$KUBECONFIG_PATH" --leader-elect=false --controllers='*' \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --bind-address=127.0.0.1 --secure-port=10257 --profiling=false --v=1
  start_proc kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$KUBECONFIG_PATH" --authentication-kubeconfig="$KUBECONFIG_PATH" \
    --authorization-kubeconfig="$KUBECONFIG_PATH" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port=10259 --profiling=false --v=1
}

# ---------------------------------------------------------------------------------------------- node

start_containerd() {
  mkdir -p "$CONTAINERD_ROOT" "$CONTAINERD_STATE"
  cat >"$STATE/containerd.toml" <<EOF
version = 2
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_STATE"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This host does not let even root lower oom_score_adj (no CAP_SYS_RESOURCE): clamp instead of failing.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CONTAINERD_STATE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CONTAINERD_ROOT/opt"
EOF
  start_proc containerd containerd --config "$STATE/containerd.toml"
  wait_for containerd 30 ctr version
  # Containers left behind by a killed run are forgotten; images are kept (they are the cache).
  local c
  for c in $(ctr -n k8s.io containers ls -q 2>/dev/null); do
    ctr -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    ctr -n k8s.io tasks rm -f "$c" >/dev/null 2>&1 || true
    ctr -n k8s.io containers rm "$c" >/dev/null 2>&1 || true
  done
}

has_image() { # has_image REF: the whole listing is read first; `ctr ... | grep -q` under pipefail fails
  # whenever grep exits before ctr has written its last line (SIGPIPE), which once failed CI.
  local names
  names=$(ctr -n k8s.io images ls -q)
  grep -qxF "$1" <<<"$names"
}

import_image() { # import_image ARCHIVE REF: skip when containerd already has that exact archive
  local archive=$1 ref=$2 sum marker
  sum=$(sha256sum "$archive" | cut -c1-16)
  marker="$CONTAINERD_ROOT/.imported-$(tr '/:' '__' <<<"$ref")"
  if [[ "$(cat "$marker" 2>/dev/null)" == "$sum" ]] && has_image "$ref"; then return; fi
  ctr -n k8s.io images import --no-unpack=false "$archive" >/dev/null
  has_image "$ref" || die "image $ref missing after import of $archive"
  echo "$sum" >"$marker"
  log "imported $ref"
}

import_images() {
  import_image "$IMAGE_CACHE/$PAUSE_IMAGE_FILE" "$PAUSE_IMAGE"
  import_image "$IMAGE_CACHE/project.tar" "$PROJECT_IMAGE"
  import_image "$IMAGE_CACHE/$AISNODE_IMAGE_FILE" "$AISNODE_IMAGE"
  import_image "$IMAGE_CACHE/versitygw-v$VERSITYGW_VERSION.tar" "$VERSITYGW_IMAGE"
  if [[ -s "$IMAGE_CACHE/transforms.tar" ]]; then import_image "$IMAGE_CACHE/transforms.tar" "$TRANSFORMS_IMAGE"; fi
  if [[ -s "$IMAGE_CACHE/etl.tar" ]]; then import_image "$IMAGE_CACHE/etl.tar" "$ETL_IMAGE"; fi
}

start_kubelet() {
  mkdir -p "$KUBELET_ROOT"
  : >"$STATE/resolv.conf"   # pods get cluster DNS only: nothing resolves to an outside server
  cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
failSwapOn: false
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: $STATE/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
serializeImagePulls: false
maxPods: 110
rotateCertificates: false
serverTLSBootstrap: false
containerLogMaxSize: 20Mi
EOF
  start_proc kubelet "$K8S_BIN/kubelet" --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$KUBELET_ROOT" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
}

start_kube_proxy() {
  cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $KUBECONFIG_PATH}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack: {maxPerCore: 0}
iptables: {localhostNodePorts: false}
oomScoreAdj: 0
EOF
  start_proc kube-proxy "$K8S_BIN/kube-proxy" --config="$STATE/kube-proxy.yaml" --v=1
}

start_coredns() {
  cat >"$STATE/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_PATH sdo
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
EOF
  start_proc coredns "$COREDNS_BIN/coredns" -conf "$STATE/Corefile"
}

# ---------------------------------------------------------------------------------------------- AIS

# AIS runs in the cluster, in namespace `ais`, as AIS users run it on Kubernetes: a proxy StatefulSet and a target
# StatefulSet of the aisnode image (built with `dsort mono etl`), readiness on /v1/health, the targets' storage on
# hostPath, and the RBAC that AIS ETL needs to start its transformer pods next to a target. Proxy and targets use the
# host network (as ais-k8s deployments can), each on its own ports, so a restarted pod keeps its address: the proxy
# is http://10.244.0.1:51080 for the host and http://ais-proxy.ais:51080 in-cluster, target i listens on
# 51081 + 10*i (docs/local-cluster.md says why not the pod network). Configuration files are written here, on the
# hostPath, one directory per pod. A node's container waits while `<data>/<pod>/hold` exists: the fault tests keep
# a killed node away for a set time that way (tests/e2e/faults.py).

ais_node_conf() { # ais_node_conf DATA_ROOT POD ROLE PORT HOSTNAME [INTRA_HOSTNAME]: DATA_ROOT/POD/local.json
  local root=$1 name=$2 role=$3 port=$4 host=$5 intra=${6:-$5}
  local dir="$root/$name"
  mkdir -p "$dir/conf" "$LOGS/$name"
  cat >"$dir/local.json" <<EOF
{
  "confdir": "$dir/conf",
  "log_dir": "$LOGS/$name",
  "host_net": {
    "hostname": "$host", "hostname_intra_control": "$intra", "hostname_intra_data": "$intra",
    "port": "$port", "port_intra_control": "$((port + 1000))", "port_intra_data": "$((port + 2000))"
  },
  "fspaths": {},
  "test_fspaths": {"root": "$root/mountpaths/$name/", "count": $([[ $role == target ]] && echo 1 || echo 0), "instance": 0}
}
EOF
}

ais_cluster_conf() { # ais_cluster_conf FILE PRIMARY_URL AUTH_JSON
  local file=$1 primary=$2 auth=$3
  # features 16384 = S3-Use-Path-Style (cmn/feat, bit 14), inherited by every s3:// bucket: versitygw is
  # addressed as http://10.244.0.1:7070/BUCKET, not as a virtual host
  cat >"$file" <<EOF
{
  "backend": {"aws": {}},
  "features": "16384",
  "timeout": {
    "cplane_operation": "2s", "max_keepalive": "5s", "cold_get_conflict": "5s", "max_host_busy": "20s",
    "startup_time": "30s", "join_startup_time": "1m", "send_file_time": "5m", "ec_streams_time": "10m",
    "object_md": "2h"
  },
  "proxy": {"primary_url": "$primary", "original_url": "$primary", "discovery_url": "", "non_electable": false},
  "space": {"cleanupwm": 65, "lowwm": 75, "highwm": 90, "out_of_space": 95, "batch_size": 32768, "dont_cleanup_time": "120m"},
  "resilver": {"enabled": true},
  "memsys": {"min_free": "2gb", "default_buf": "32kb", "to_gc": "4gb", "hk_time": "3m", "min_pct_total": 0, "min_pct_free": 0},
  "versioning": {"enabled": true, "validate_warm_get": false},
  "net": {
    "l4": {"proto": "tcp", "sndrcv_buf_size": 131072},
    "http": {
      "use_https": false, "server_crt": "server.crt", "server_key": "server.key", "domain_tls": "",
      "client_ca_tls": "", "client_auth_tls": 0, "idle_conn_time": "6s", "idle_conns_per_host": 32,
      "idle_conns": 256, "write_buffer_size": 0, "read_buffer_size": 0, "chunked_transfer": true,
      "skip_verify": false
    },
    "use_ipv6": false
  },
  "auth": $auth,
  "distributed_sort": {
    "duplicated_records": "ignore", "missing_shards": "ignore", "ekm_malformed_line": "abort",
    "ekm_missing_key": "abort", "default_max_mem_usage": "60%", "call_timeout": "10m",
    "dsorter_mem_threshold": "100GB", "compression": "never", "bundle_multiplier": 4
  }
}
EOF
}

ais_manifests() { # ais_manifests NAME PROXY_PORT TARGETS DATA_ROOT [AUTH_JSON]: one AIS cluster's objects
  local name=$1 port=$2 targets=$3 root=$4 auth=${5:-"{}"} tport=$(($2 + 1))
  local primary="http://$NODE_IP:$port"
  local wait_hold='while [ -e "$AIS_DATA/$MY_POD/hold" ]; do sleep 0.2; done; exec /usr/local/bin/aisnode'
  local i
  ais_cluster_conf "$root/cluster.json" "$primary" "$auth"
  ais_node_conf "$root" "$name-proxy-0" proxy "$port" "$NODE_IP"
  # Targets use the host network too, each on ports of its own (target i: PROXY_PORT + 1 + 10 i, +1000 and +2000
  # for the intra-cluster nets), so a target that comes back in a new pod has the address it had. In the pod
  # network a restarted target got a new IP: the proxy dropped it (its old address dead), it rejoined, a
  # rebalance followed, and dSort attempts started meanwhile failed on missing input shards (5 of 5 in CI);
  # stable DNS names for the intra-cluster nets kept it in the map, but the other target's dSort streams went
  # on dialing the old IP. docs/local-cluster.md has the details.
  for ((i = 0; i < targets; i++)); do
    ais_node_conf "$root" "$name-target-$i" target "$((tport + 10 * i))" "$NODE_IP"
  done
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: $name-target, namespace: ais}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: $name-proxy, namespace: ais}  # no rights: in-cluster config is how aisnode knows it runs in K8s
---
# AIS ETL: a target creates its transformer pod and a NodePort Service in its own namespace, watches the pod,
# reads its logs and deletes both when the ETL stops; it reads its own pod spec (the ETL pod gets its volumes).
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: $name-etl, namespace: ais}
rules:
  - {apiGroups: [""], resources: [pods], verbs: [get, list, watch, create, delete]}
  - {apiGroups: [""], resources: [pods/log], verbs: [get]}
  - {apiGroups: [""], resources: [services], verbs: [get, create, delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: $name-etl, namespace: ais}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: $name-etl}
subjects: [{kind: ServiceAccount, name: $name-target, namespace: ais}]
---
apiVersion: v1
kind: Service
metadata: {name: $name-proxy, namespace: ais}
spec:
  selector: {ais.sdo.dev/cluster: $name, ais.sdo.dev/role: proxy}
  ports: [{name: http, port: $port, targetPort: $port, protocol: TCP}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: $name-proxy, namespace: ais}
spec:
  serviceName: $name-proxy
  replicas: 1
  podManagementPolicy: Parallel
  selector: {matchLabels: {ais.sdo.dev/cluster: $name, ais.sdo.dev/role: proxy}}
  template:
    metadata: {labels: {ais.sdo.dev/cluster: $name, ais.sdo.dev/role: proxy}}
    spec:
      serviceAccountName: $name-proxy
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      enableServiceLinks: false
      terminationGracePeriodSeconds: 10
      containers:
        - name: aisnode
          image: $AISNODE_IMAGE
          imagePullPolicy: Never
          command: ["/bin/sh", "-c", '$wait_hold -role=proxy -config=\$AIS_DATA/cluster.json -local_config=\$AIS_DATA/\$MY_POD/local.json -ntargets=$targets']
          env:
            - {name: AIS_DATA, value: "$root"}
            - {name: AIS_PRIMARY_EP, value: "$primary"}
            - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: MY_NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
            - {name: K8S_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            # in the host's network the Service IP of the API server does not route; its node address does
            - {name: KUBERNETES_SERVICE_HOST, value: "$NODE_IP"}
            - {name: KUBERNETES_SERVICE_PORT, value: "6443"}
          readinessProbe:
            httpGet: {path: "/v1/health?readiness=true", port: $port}
            periodSeconds: 2
            failureThreshold: 3
          volumeMounts:
            - {name: data, mountPath: $root}
            - {name: logs, mountPath: $LOGS}
      volumes:
        - {name: data, hostPath: {path: $root, type: Directory}}
        - {name: logs, hostPath: {path: $LOGS, type: Directory}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: $name-target, namespace: ais}
spec:
  serviceName: $name-target
  replicas: $targets
  podManagementPolicy: Parallel
  selector: {matchLabels: {ais.sdo.dev/cluster: $name, ais.sdo.dev/role: target}}
  template:
    metadata: {labels: {ais.sdo.dev/cluster: $name, ais.sdo.dev/role: target}}
    spec:
      serviceAccountName: $name-target
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      enableServiceLinks: false
      terminationGracePeriodSeconds: 10
      containers:
        - name: aisnode
          image: $AISNODE_IMAGE
          imagePullPolicy: Never
          command: ["/bin/sh", "-c", '$wait_hold -role=target -config=\$AIS_DATA/cluster.json -local_config=\$AIS_DATA/\$MY_POD/local.json']
          env:
            - {name: AIS_DATA, value: "$root"}
            - {name: AIS_PRIMARY_EP, value: "$primary"}
            # s3:// buckets: the local S3 server and its credentials (read once, at start)
            - {name: S3_ENDPOINT, value: "$S3_ENDPOINT_URL"}
            - {name: AWS_REGION, value: "$S3_REGION"}
            - {name: AWS_ACCESS_KEY_ID, valueFrom: {secretKeyRef: {name: $S3_SECRET, key: access-key}}}
            - {name: AWS_SECRET_ACCESS_KEY, valueFrom: {secretKeyRef: {name: $S3_SECRET, key: secret-key}}}
            - {name: AIS_S3_CONFIG_DIR, value: /etc/ais-s3}  # its *cred* files: the profiles buckets may name
            - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: MY_NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
            - {name: K8S_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: KUBERNETES_SERVICE_HOST, value: "$NODE_IP"}
            - {name: KUBERNETES_SERVICE_PORT, value: "6443"}
          readinessProbe:  # the port differs per pod (ordinal): an HTTP GET by bash, which the image has
            exec:
              command:
                - /bin/bash
                - -c
                - 'exec 3<>/dev/tcp/$NODE_IP/\$(($tport + 10 * \${MY_POD##*-})) && printf "GET /v1/health?readiness=true HTTP/1.0\r\n\r\n" >&3 && head -1 <&3 | grep -q " 200"'
            periodSeconds: 2
            timeoutSeconds: 2
            failureThreshold: 3
          volumeMounts:
            - {name: data, mountPath: $root}
            - {name: logs, mountPath: $LOGS}
            - {name: promote, mountPath: $PROMOTE_DIR}
            - {name: s3-profiles, mountPath: /etc/ais-s3, readOnly: true}
      volumes:
        - {name: data, hostPath: {path: $root, type: Directory}}
        - {name: logs, hostPath: {path: $LOGS, type: Directory}}
        - {name: s3-profiles, secret: {secretName: $S3_SECRET, items: [{key: credentials, path: credentials}]}}
        # files on this host that the tests and the example data promote into objects (sds_tools.exampledata.PROMOTE_ROOT)
        - {name: promote, hostPath: {path: $PROMOTE_DIR, type: DirectoryOrCreate}}
EOF
}

s3_credentials() { # once per cluster: random keys, kept in $S3_DIR (the Secrets and `cluster.sh env` read them)
  mkdir -p "$S3_DIR/data"
  [[ -s "$S3_DIR/access-key" ]] || head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F >"$S3_DIR/access-key"
  [[ -s "$S3_DIR/secret-key" ]] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$S3_DIR/secret-key"
  chmod 600 "$S3_DIR/access-key" "$S3_DIR/secret-key"
}

s3_profiles() { # the targets' shared credentials file: the keys as profile default, and a profile S3 does not
  # know (`revoked`: a bucket with extra.aws.profile=revoked is what wrong credentials look like; the e2e tests)
  printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
    "$(cat "$S3_DIR/access-key")" "$(cat "$S3_DIR/secret-key")"
  printf '[revoked]\naws_access_key_id = SDOREVOKED0000000000\naws_secret_access_key = %s\n' "$(printf '0%.0s' {1..40})"
}

apply_s3_secret() { # apply_s3_secret NAMESPACE
  kubectl -n "$1" create secret generic "$S3_SECRET" --from-file=access-key="$S3_DIR/access-key" \
    --from-file=secret-key="$S3_DIR/secret-key" --from-file=credentials=<(s3_profiles) \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

apply_s3() { # the S3 server: versitygw's posix backend over $S3_DIR/data (one folder per bucket)
  s3_credentials
  kubectl create namespace s3 --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  apply_s3_secret s3
  apply_s3_secret ais
  kubectl apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: versitygw, namespace: s3, labels: {app: versitygw}}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {app: versitygw}}
  template:
    metadata: {labels: {app: versitygw}}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      hostNetwork: true  # on the bridge address, like AIS: the targets (host network) and the host reach it there
      terminationGracePeriodSeconds: 5
      containers:
        - name: versitygw
          image: $VERSITYGW_IMAGE
          imagePullPolicy: Never
          args: ["--port", "$NODE_IP:$S3_PORT", "--region", "$S3_REGION", "posix", "/data"]
          env:
            - {name: ROOT_ACCESS_KEY_ID, valueFrom: {secretKeyRef: {name: $S3_SECRET, key: access-key}}}
            - {name: ROOT_SECRET_ACCESS_KEY, valueFrom: {secretKeyRef: {name: $S3_SECRET, key: secret-key}}}
          readinessProbe: {tcpSocket: {host: $NODE_IP, port: $S3_PORT}, periodSeconds: 2}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes:
        - {name: data, hostPath: {path: $S3_DIR/data, type: Directory}}
EOF
}

s3_ready() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "$S3_ENDPOINT_URL/")" =~ ^[2-4][0-9][0-9]$ ]]; }

apply_ais() {
  mkdir -p "$AIS_DATA"
  ais_manifests ais "$AIS_PROXY_PORT" "$AIS_TARGETS" "$AIS_DATA" | kubectl apply -f - >/dev/null
}

ais_ready() { curl -sf -o /dev/null "$AIS_ENDPOINT_URL/v1/health?prr=true"; }
ais_pods_ready() { # AIS runs as the StatefulSets (a cluster of the old host-process layout is not healthy)
  [[ "$(kubectl -n ais get statefulset ais-target -o jsonpath='{.status.readyReplicas}' 2>/dev/null)" == "$AIS_TARGETS" ]]
}

# ---------------------------------------------------------------------------------------------- AIS with AuthN

auth_enabled() { [[ -s "$AUTHN_DIR/secret" ]]; }
ais_auth_ready() { curl -sf -o /dev/null "$AIS_AUTH_ENDPOINT_URL/v1/health?prr=true"; }
authn_url() { # the AuthN pod's address (from the host Service IPs do not route; pods use ais-authn.ais)
  local ip
  ip=$(kubectl -n ais get endpointslices -l kubernetes.io/service-name=ais-authn \
    -o jsonpath='{.items[0].endpoints[0].addresses[0]}' 2>/dev/null) || true
  echo "http://${ip:-0.0.0.0}:$AUTHN_PORT"
}
authn_ready() { curl -sf -o /dev/null "$(authn_url)/v1/clusters"; }

apply_ais_auth() { # the AIS cluster that requires tokens signed with the AuthN server's HMAC secret
  mkdir -p "$AIS_AUTH_DATA" "$AUTHN_DIR"
  # no trailing newline: the files become Secret values, read by AuthN byte for byte
  [[ -s "$AUTHN_DIR/secret" ]] || (umask 077; printf %s "$(openssl rand -hex 32)" >"$AUTHN_DIR/secret")
  [[ -s "$AUTHN_DIR/admin-pass" ]] || (umask 077; printf %s "$(openssl rand -hex 16)" >"$AUTHN_DIR/admin-pass")
  local key; key=$(cat "$AUTHN_DIR/secret")
  ais_manifests ais-auth "$AIS_AUTH_PORT" 1 "$AIS_AUTH_DATA" \
    "{\"client_auth_required\": true, \"signature\": {\"method\": \"HS256\", \"key\": \"$key\"}}" |
    kubectl apply -f - >/dev/null  # http://ais-auth-proxy.ais:56080
}

apply_authn() { # the AuthN server as a pod: in its own network namespace (it binds every interface it has)
  mkdir -p "$AUTHN_DIR/conf"
  cat >"$AUTHN_DIR/conf/authn.json" <<EOF
{"auth": {"expiration_time": "24h"}, "log": {"dir": "/tmp", "level": "3"},
 "net": {"http": {"port": $AUTHN_PORT, "use_https": false}}, "timeout": {"default_timeout": "30s"}}
EOF
  chown -R 65534:65534 "$AUTHN_DIR/conf"
  kubectl -n ais create secret generic ais-authn --from-file=secret="$AUTHN_DIR/secret" \
    --from-file=admin-pass="$AUTHN_DIR/admin-pass" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: ais-authn, namespace: ais, labels: {app: ais-authn}}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {app: ais-authn}}
  template:
    metadata: {labels: {app: ais-authn}}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false  # the Service's AIS_AUTHN_PORT=tcp://... variable would be read as AuthN's port
      securityContext: {runAsUser: 65534, runAsGroup: 65534, runAsNonRoot: true}
      containers:
        - name: authn
          image: $AUTHN_IMAGE
          imagePullPolicy: Never
          command: ["/usr/local/bin/authn", "-config=/etc/authn"]
          env:
            - {name: AIS_AUTHN_SECRET_KEY, valueFrom: {secretKeyRef: {name: ais-authn, key: secret}}}
            - {name: AIS_AUTHN_SU_PASS, valueFrom: {secretKeyRef: {name: ais-authn, key: admin-pass}}}
          ports: [{containerPort: $AUTHN_PORT}]
          readinessProbe: {tcpSocket: {port: $AUTHN_PORT}, periodSeconds: 2}
          securityContext: {allowPrivilegeEscalation: false}
          volumeMounts: [{name: conf, mountPath: /etc/authn}, {name: tmp, mountPath: /tmp}]
      volumes:
        - {name: conf, hostPath: {path: $AUTHN_DIR/conf, type: Directory}}
        - {name: tmp, emptyDir: {}}
---
apiVersion: v1
kind: Service
metadata: {name: ais-authn, namespace: ais}
spec:
  selector: {app: ais-authn}
  ports: [{name: http, port: $AUTHN_PORT, targetPort: $AUTHN_PORT, protocol: TCP}]
EOF
}

auth_up() { # idempotent: AuthN, the AIS cluster that requires it, the registration and the operator's identity
  local t0=$SECONDS
  [[ -s "$IMAGE_CACHE/authn.tar" ]] || "$HACK_DIR/build-images.sh" authn
  import_image "$IMAGE_CACHE/authn.tar" "$AUTHN_IMAGE"
  apply_ais_auth
  apply_authn
  wait_for "AIS (AuthN) ready" 120 ais_auth_ready || die "AIS with AuthN not ready; see $LOGS/ais-auth-*"
  wait_for "AuthN server ready" 120 authn_ready || die "AuthN not ready: kubectl -n ais logs deploy/ais-authn"
  kubectl create namespace "$OPERATOR_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  python3 "$HACK_DIR/ais_auth.py" --authn "$(authn_url)" --ais "$AIS_AUTH_ENDPOINT_URL" \
    --admin-pass-file "$AUTHN_DIR/admin-pass" setup --token-file "$AUTHN_DIR/operator-token"
  kubectl -n "$OPERATOR_NS" create secret generic "$ADMIN_SECRET" --from-file=token="$AUTHN_DIR/operator-token" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  log "AIS with AuthN up in $((SECONDS - t0))s: $AIS_AUTH_ENDPOINT_URL, AuthN $(authn_url); the operator's AIS identity: Secret $OPERATOR_NS/$ADMIN_SECRET"
}

# ---------------------------------------------------------------------------------------------- in-cluster objects

node_ready() {
  [[ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]] &&
    [[ -z "$(kubectl get node "$NODE_NAME" -o jsonpath='{.spec.taints}' 2>/dev/null)" ]]
}

ais_namespace() { kubectl create namespace ais --dry-run=client -o yaml | kubectl apply -f - >/dev/null; }

# ---------------------------------------------------------------------------------------------- commands

all_healthy() { status_base >/dev/null 2>&1; }

cmd_up() {
  local t0=$SECONDS
  preflight
  if [[ -f "$STATE/up" ]] && all_healthy; then
    log "cluster already up and healthy"
    if [[ $AIS_AUTH == 1 ]] && ! auth_healthy; then auth_up; fi
    return 0
  fi
  cmd_down
  "$HACK_DIR/build-binaries.sh"
  "$HACK_DIR/build-images.sh" pause aisnode versitygw
  [[ -s "$IMAGE_CACHE/project.tar" && "${SDO_REBUILD_IMAGE:-0}" != 1 ]] || "$HACK_DIR/build-images.sh" project
  mkdir -p "$STATE" "$LOGS" "$PIDS"
  log "starting cluster (state: $STATE)"
  network_up
  make_pki
  start_etcd
  start_apiserver
  start_controllers
  start_containerd
  import_images
  start_kubelet
  start_kube_proxy
  start_coredns
  wait_for "node $NODE_NAME Ready" 120 node_ready || die "node not Ready; see $LOGS/kubelet.log"
  ais_namespace
  apply_s3
  apply_ais
  wait_for "serviceaccount default/default" 60 kubectl get serviceaccount default -n default
  wait_for "AIS cluster ready" 120 ais_ready || die "AIS not ready; see kubectl -n ais get pods and $LOGS/ais-*"
  wait_for "S3 server ready" 60 s3_ready || die "S3 server not ready: kubectl -n s3 logs deploy/versitygw"
  wait_for "all components healthy" 60 all_healthy || { status; die "cluster unhealthy"; }
  if [[ $AIS_AUTH == 1 ]]; then auth_up; fi
  touch "$STATE/up"
  log "cluster up in $((SECONDS - t0))s; kubeconfig: $KUBECONFIG_PATH; AIS: $AIS_ENDPOINT_URL"
  log "for a shell: eval \"\$(make -s cluster-env)\""
}

cmd_down() {
  [[ $EUID -eq 0 ]] || die "must run as root"
  rm -f "$STATE/up"
  stop_proc kube-proxy "$K8S_BIN/kube-proxy"
  stop_proc kubelet "$K8S_BIN/kubelet"
  stop_proc coredns "$COREDNS_BIN/coredns"
  local f
  # Pod containers: kill every container runc knows in our runtime root, then the shims, then containerd.
  local runc_root id
  for runc_root in "$CONTAINERD_STATE"/runc/*; do
    [[ -d $runc_root ]] || continue
    for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
      runc --root "$runc_root" kill -a "$id" KILL 2>/dev/null || true
      runc --root "$runc_root" delete -f "$id" 2>/dev/null || true
    done
  done
  stop_pids $(pgrep -f -- "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true)
  stop_proc containerd "containerd --config $STATE/containerd.toml"
  kill_cgroup_leftovers
  stop_proc kube-scheduler "$K8S_BIN/kube-scheduler"
  stop_proc kube-controller-manager "$K8S_BIN/kube-controller-manager"
  stop_proc kube-apiserver "$K8S_BIN/kube-apiserver"
  stop_proc etcd "$ETCD_BIN/etcd"
  unmount_under "$KUBELET_ROOT" "$CONTAINERD_STATE" "$CONTAINERD_ROOT/io.containerd.runtime.v2.task" \
    "$CONTAINERD_ROOT/io.containerd.grpc.v1.cri/sandboxes"
  network_down
  rm -rf "$KUBELET_ROOT" "$CONTAINERD_STATE" "$STATE"
  log "cluster down"
}

kill_cgroup_leftovers() { # processes of pods whose containers outlived their runtime
  local procs pid
  for procs in $(find /sys/fs/cgroup/*/kubepods* -name cgroup.procs 2>/dev/null); do
    while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$procs"
  done
  sleep 0.2
  find /sys/fs/cgroup/*/kubepods* -depth -type d -exec rmdir {} + 2>/dev/null || true
}

unmount_under() { # lazily unmount every mount point below the given directories, deepest first
  local d mp
  for d in "$@"; do
    while read -r mp; do umount -l "$mp" 2>/dev/null || true; done < <(awk -v d="$d" '$2 ~ "^"d {print $2}' /proc/mounts | sort -r)
  done
}

status() { # prints one line per component; returns non-zero if any is unhealthy
  local bad=0
  status_base || bad=1
  if auth_enabled; then status_auth || bad=1; fi
  return $bad
}

# check NAME COMMAND...: one status line; sets the caller's `bad` when COMMAND fails
check() { local name=$1; shift; if "$@" >/dev/null 2>&1; then printf '%-24s ok\n' "$name"; else printf '%-24s FAILED\n' "$name"; bad=1; fi; }

status_base() {
  local bad=0
  check etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
  check kube-apiserver curl -sf --cacert "$PKI/ca.crt" "https://$NODE_IP:6443/readyz"
  check kube-controller-manager curl -skf https://127.0.0.1:10257/healthz
  check kube-scheduler curl -skf https://127.0.0.1:10259/healthz
  check containerd ctr version
  check kubelet curl -sf http://127.0.0.1:10248/healthz
  check kube-proxy curl -sf http://127.0.0.1:10256/healthz
  check coredns curl -sf http://127.0.0.1:18181/ready
  check "node $NODE_NAME Ready" node_ready
  check "ais pods (StatefulSets)" ais_pods_ready
  check "ais (prr)" ais_ready
  check "s3 server (versitygw)" s3_ready
  local n; n=$(curl -sf "$AIS_ENDPOINT_URL/v1/daemon?what=smap" 2>/dev/null | jq '.tmap | length' 2>/dev/null || echo 0)
  check "ais targets ($n/$AIS_TARGETS)" test "$n" -ge "$AIS_TARGETS"
  return $bad
}

status_auth() {
  local bad=0
  check "ais with authn (prr)" ais_auth_ready
  check "authn server" authn_ready
  check "operator ais identity" kubectl -n "$OPERATOR_NS" get secret "$ADMIN_SECRET"
  return $bad
}

auth_healthy() { auth_enabled && status_auth >/dev/null 2>&1; }

cmd_status() { status; }

cmd_env() {
  cat <<EOF
export KUBECONFIG=$KUBECONFIG_PATH
export AIS_ENDPOINT=$AIS_ENDPOINT_URL
export PATH=$K8S_BIN:$HELM_BIN:\$PATH
export S3_ENDPOINT=$S3_ENDPOINT_URL
export AWS_REGION=$S3_REGION
export AWS_ACCESS_KEY_ID=$(cat "$S3_DIR/access-key" 2>/dev/null)
export AWS_SECRET_ACCESS_KEY=$(cat "$S3_DIR/secret-key" 2>/dev/null)
EOF
  if auth_enabled; then
    cat <<EOF
export AIS_AUTH_ENDPOINT=$AIS_AUTH_ENDPOINT_URL
export AIS_AUTHN_URL=$(authn_url 2>/dev/null || true)
export AIS_AUTHN_ADMIN_PASS_FILE=$AUTHN_DIR/admin-pass
EOF
  fi
}

[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0   # sourced (tests, debugging): functions only
case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  load-images) import_images ;;
  *) echo "usage: $0 up|down|status|env|load-images" >&2; exit 2 ;;
esac
