#!/usr/bin/env bash
# Bring up the two-node local Kubernetes cluster (see docs/cluster.md).
#   k8s-control 192.168.56.10: registry, containerd, etcd, kube-apiserver,
#       kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#   k8s-worker  192.168.56.20: containerd, kubelet, kube-proxy
# Each node is a network namespace plus a persistent mount namespace in which per-node
# directories are bound over the paths a node's components use (/var/lib/kubelet,
# /run/containerd, /etc/kubernetes, ...). Every process is started in both namespaces with
# nsenter and put in the pids cgroup /ktrail/NODE/system so `down` finds all of them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[[ $(id -u) == 0 ]] || die "cluster up needs root"
cluster_lock
T0=$SECONDS

# ---------------------------------------------------------------- preflight
if [[ -f $STATE/up.done ]]; then
	if "$CLUSTER_DIR/status.sh" >/dev/null 2>&1; then
		info "cluster is already up (cargo xtask cluster status); nothing to do"
		exit 0
	fi
	step "a previous cluster is up but unhealthy: taking it down first"
	"$CLUSTER_DIR/down.sh"
elif [[ -d $STATE || -d $RUN ]] || ip link show "$BRIDGE" >/dev/null 2>&1; then
	step "leftovers of an earlier run found: cleaning them up first"
	"$CLUSTER_DIR/down.sh"
fi

step "checking prerequisites"
DEBS=(containerd runc containernetworking-plugins iptables conntrack busybox-static gcc libc6-dev openssl curl util-linux iproute2)
missing_prereqs() {
	local c p
	for c in containerd containerd-shim-runc-v2 runc iptables conntrack kubectl nsenter unshare openssl gcc busybox curl; do
		command -v "$c" >/dev/null || echo "$c"
	done
	for p in bridge host-local loopback portmap; do [[ -x /usr/lib/cni/$p ]] || echo "/usr/lib/cni/$p"; done
	[[ -x /usr/local/go/bin/go ]] || command -v go >/dev/null || echo go
}
missing=$(missing_prereqs | tr '\n' ' ')
if [[ -n $missing ]]; then
	info "missing: $missing; installing Debian packages: ${DEBS[*]} (log: $LOGS/apt.log)"
	mkdir -p "$LOGS"
	{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${DEBS[@]}"; } \
		>"$LOGS/apt.log" 2>&1 || { tail -5 "$LOGS/apt.log" >&2; die "apt-get install failed; log: $LOGS/apt.log"; }
	missing=$(missing_prereqs | tr '\n' ' ')
	[[ -z $missing ]] || die "still missing after apt-get install: $missing (kubectl and Go are expected preinstalled)"
fi
info "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), CNI plugins /usr/lib/cni"

[[ -n ${KTRAIL_CLUSTER_SKIP_BUILD:-} ]] || "$CLUSTER_DIR/build.sh" all

rm -rf "$LOGS/k8s-control" "$LOGS/k8s-worker"
mkdir -p "$STATE" "$RUN" "$LOGS/k8s-control" "$LOGS/k8s-worker"
# $RUN holds the namespace handles: a private mount, so binds there do not propagate.
mount --bind "$RUN" "$RUN"
mount --make-private "$RUN"
: >"$STATE/created-dirs"

# ---------------------------------------------------------------- host sysctls the kubelet changes
# The kubelet sets vm.overcommit_memory, kernel.panic and kernel.panic_on_oops on the (shared)
# kernel; remember the host's values so `down` can put them back.
for s in vm.overcommit_memory kernel.panic kernel.panic_on_oops; do
	echo "$s=$(sysctl -n "$s")"
done >"$STATE/sysctl.orig"

# ---------------------------------------------------------------- network
step "network: bridge $BRIDGE ($HOST_IP/24), namespaces k8s-control ($CONTROL_IP), k8s-worker ($WORKER_IP)"
ip link add "$BRIDGE" type bridge
ip addr add "$HOST_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
for n in "${NODES[@]}"; do
	# The namespace lives at our handle; the name /run/netns/NODE is attached when free (the
	# two-node tests in tests/ take the same names for minutes at a time).
	touch "$RUN/$n.net"
	unshare --net="$RUN/$n.net" true
	# A process in the new namespace, for the commands that take a pid (nsenter execs sleep).
	nsenter --net="$RUN/$n.net" -- sleep 60 9>&- &
	holder=$!
	ino=$(ns_inode "$RUN/$n.net")
	for _ in $(seq 1 500); do
		[[ $(readlink "/proc/$holder/ns/net" 2>/dev/null) == "net:[$ino]" ]] && break
		sleep 0.01
	done
	[[ $(readlink "/proc/$holder/ns/net" 2>/dev/null) == "net:[$ino]" ]] || die "could not enter the new network namespace of $n"
	veth=$(node_veth "$n")
	ip link add "$veth" type veth peer name eth0 netns "$holder"
	if [[ -e /run/netns/$n ]]; then
		info "the name $n is taken by another network namespace (a two-node test?): enter this node with nsenter --net=$RUN/$n.net"
	else
		ip netns attach "$n" "$holder"
	fi
	kill "$holder"; wait "$holder" 2>/dev/null || true
	ip link set "$veth" master "$BRIDGE" up
	in_net "$n" ip link set lo up
	in_net "$n" ip addr add "$(node_ip "$n")/24" dev eth0
	in_net "$n" ip link set eth0 up
	in_net "$n" ip route add default via "$HOST_IP"
	in_net "$n" sysctl -qw net.ipv4.ip_forward=1
	in_net "$n" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
	in_net "$n" sysctl -qw net.bridge.bridge-nf-call-ip6tables=1 2>/dev/null || true
	ns_inode "$RUN/$n.net" >"$RUN/$n.netns-inode"
done
# Pod CIDR routes between the nodes (what a CNI's host-gw mode would install), and from the host.
in_net k8s-control ip route add 10.244.1.0/24 via "$WORKER_IP"
in_net k8s-worker ip route add 10.244.0.0/24 via "$CONTROL_IP"
ip route add 10.244.0.0/24 via "$CONTROL_IP"
ip route add 10.244.1.0/24 via "$WORKER_IP"
# Let bridged/routed cluster traffic through the host's FORWARD chain whatever its policy.
for r in "-i $BRIDGE" "-o $BRIDGE"; do
	# shellcheck disable=SC2086
	iptables -I FORWARD $r -m comment --comment ktrail-cluster -j ACCEPT
done

# ---------------------------------------------------------------- certificates, kubeconfigs
"$CLUSTER_DIR/pki.sh"

# ---------------------------------------------------------------- per-node files
write_node_files() {
	local n=$1 ip cidr d
	ip=$(node_ip "$n"); cidr=$(node_pod_cidr "$n"); d=$STATE/nodes/$n
	mkdir -p "$d"/{kubelet,log-pods,log-containers,run-containerd,containerd,cni-conf,cni-lib,netns,etc-containerd/certs.d,etcd}
	cat >"$d/etc-containerd/config.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "/run/containerd/containerd.sock"
[debug]
  level = "info"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine withholds CAP_SYS_RESOURCE even from root: no process may lower its
  # oom_score_adj, so clamp the pause container's -998 (and Guaranteed pods' -997) to ours.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
EOF
	# docker.io and registry.k8s.io resolve to the cluster's own registry on k8s-control.
	local reg
	for reg in docker.io registry.k8s.io "$REGISTRY"; do
		mkdir -p "$d/etc-containerd/certs.d/$reg"
		local server=https://$reg
		[[ $reg == docker.io ]] && server=https://registry-1.docker.io
		[[ $reg == "$REGISTRY" ]] && server=http://$REGISTRY
		cat >"$d/etc-containerd/certs.d/$reg/hosts.toml" <<EOF
server = "$server"

[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
	done
	cat >"$d/cni-conf/10-ktrail-bridge.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "ktrail",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$cidr", "gateway": "${cidr%0/24}1" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
	cat >"$d/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupRoot: /ktrail/$n
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
failSwapOn: false
address: $ip
healthzBindAddress: 127.0.0.1
healthzPort: 10248
rotateCertificates: false
serializeImagePulls: false
resolvConf: /etc/resolv.conf
# Both nodes share this machine's disk with the engineers' builds: a percentage of a large
# shared disk (2% of 252 GB) evicted the test pods while plenty was left for them.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 500Mi
  imagefs.available: 500Mi
oomScoreAdj: 0
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
EOF
	cat >"$d/etc-kubernetes/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /etc/kubernetes/kube-proxy.conf
mode: iptables
oomScoreAdj: 0
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $n
bindAddress: $ip
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}
for n in "${NODES[@]}"; do write_node_files "$n"; done
mkdir -p "$STATE/registry"
cat >"$STATE/registry/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $STATE/registry/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF

# ---------------------------------------------------------------- mount namespaces
# NODE-PATH:STATE-SUBDIR pairs bound inside each node's mount namespace.
BINDS=(
	/etc/kubernetes:etc-kubernetes /etc/containerd:etc-containerd /etc/cni/net.d:cni-conf
	/var/lib/kubelet:kubelet /var/log/pods:log-pods /var/log/containers:log-containers
	/run/containerd:run-containerd /var/lib/containerd:containerd /var/lib/cni:cni-lib
	/run/netns:netns /var/lib/etcd:etcd
)
step "mount namespaces (per-node ${BINDS[*]%%:*})"
for b in "${BINDS[@]}"; do
	t=${b%%:*}
	if [[ ! -d $t ]]; then mkdir -p "$t"; echo "$t" >>"$STATE/created-dirs"; fi
done
for n in "${NODES[@]}"; do
	d=$STATE/nodes/$n
	touch "$RUN/$n.mnt"
	script="set -e"
	for b in "${BINDS[@]}"; do script+="; mount --bind $d/${b#*:} ${b%%:*}"; done
	# Shared propagation inside the node, as on a systemd host (kubelet volume mounts reach
	# containerd and the containers); the namespace itself is private from the host.
	script+="; mount --make-rshared /"
	unshare --mount="$RUN/$n.mnt" --propagation private /bin/sh -c "$script"
done
info "mount namespaces: $RUN/k8s-control.mnt, $RUN/k8s-worker.mnt"

# ---------------------------------------------------------------- cgroups
step "cgroups (v1): /ktrail/k8s-control, /ktrail/k8s-worker in every hierarchy"
for h in /sys/fs/cgroup/*/; do
	h=${h%/}
	[[ $(basename "$h") == unified ]] && continue
	for p in ktrail ktrail/k8s-control ktrail/k8s-worker ktrail/k8s-control/system ktrail/k8s-worker/system; do
		mkdir -p "$h/$p"
		if [[ -f $h/$p/cpuset.cpus ]]; then
			cat "$(dirname "$h/$p")/cpuset.cpus" >"$h/$p/cpuset.cpus"
			cat "$(dirname "$h/$p")/cpuset.mems" >"$h/$p/cpuset.mems"
		fi
	done
done

# ---------------------------------------------------------------- process helpers
# start NODE NAME CMD...: run CMD in NODE's namespaces, logging to $LOGS/NODE/NAME.log.
start() {
	local n=$1 name=$2; shift 2
	local log=$LOGS/$n/$name.log
	nsenter --mount="$RUN/$n.mnt" --net="$RUN/$n.net" -- /bin/sh -c \
		'echo $$ >/sys/fs/cgroup/pids/ktrail/'"$n"'/system/cgroup.procs; exec setsid "$@"' sh "$@" \
		>"$log" 2>&1 </dev/null 9>&- &
	echo $! >"$RUN/$n.$name.pid"
	info "$n: started $name (pid $!, log $log)"
}
# wait_ready NODE NAME TIMEOUT CMD...: poll CMD until it succeeds; name the failing component.
wait_ready() {
	local n=$1 name=$2 timeout=$3; shift 3
	local log=$LOGS/$n/$name.log pid deadline=$((SECONDS + timeout))
	pid=$(cat "$RUN/$n.$name.pid" 2>/dev/null || true)
	until "$@" >/dev/null 2>&1; do
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			tail -15 "$log" >&2 || true
			die "$name on $n exited; log: $log"
		fi
		if ((SECONDS > deadline)); then
			tail -15 "$log" >&2 || true
			die "$name on $n not ready after ${timeout}s; log: $log"
		fi
		sleep 1
	done
	info "$n: $name ready ($((SECONDS - T0))s since start)"
}
# Development aid: KTRAIL_CLUSTER_STOP_AFTER=images|containerd|etcd|apiserver stops there.
stop_after() { [[ ${KTRAIL_CLUSTER_STOP_AFTER:-} == "$1" ]] && { touch "$STATE/up.partial"; info "stopping after $1"; exit 0; }; true; }
KC=(kubectl --kubeconfig "$STATE/super-admin.conf")

# ---------------------------------------------------------------- registry + images
step "registry on k8s-control ($REGISTRY)"
start k8s-control registry "$REGISTRY_BIN/registry" serve "$STATE/registry/config.yml"
wait_ready k8s-control registry 30 curl -sf "http://$REGISTRY/v2/"
in_net k8s-worker curl -sf --max-time 5 "http://$REGISTRY/v2/" >/dev/null \
	|| die "k8s-worker does not reach the registry at $REGISTRY over $BRIDGE"
info "host -> $REGISTRY and k8s-worker -> $REGISTRY: ok"
"$CLUSTER_DIR/images.sh"
stop_after images

# ---------------------------------------------------------------- containerd
step "containerd on both nodes"
for n in "${NODES[@]}"; do
	start "$n" containerd containerd --config /etc/containerd/config.toml
done
for n in "${NODES[@]}"; do
	wait_ready "$n" containerd 30 in_node "$n" ctr --address /run/containerd/containerd.sock version
done
stop_after containerd

# ---------------------------------------------------------------- control plane
step "etcd (TLS) on k8s-control"
P=/etc/kubernetes/pki
start k8s-control etcd "$ETCD_BIN/etcd" --name=k8s-control --data-dir=/var/lib/etcd \
	--advertise-client-urls="https://$CONTROL_IP:2379" --listen-client-urls="https://127.0.0.1:2379,https://$CONTROL_IP:2379" \
	--initial-advertise-peer-urls="https://$CONTROL_IP:2380" --listen-peer-urls="https://$CONTROL_IP:2380" \
	--initial-cluster="k8s-control=https://$CONTROL_IP:2380" --listen-metrics-urls=http://127.0.0.1:2381 \
	--cert-file=$P/etcd/server.crt --key-file=$P/etcd/server.key --client-cert-auth=true --trusted-ca-file=$P/etcd/ca.crt \
	--peer-cert-file=$P/etcd/peer.crt --peer-key-file=$P/etcd/peer.key --peer-client-cert-auth=true \
	--peer-trusted-ca-file=$P/etcd/ca.crt --snapshot-count=10000
wait_ready k8s-control etcd 60 in_node k8s-control "$ETCD_BIN/etcdctl" --endpoints=https://127.0.0.1:2379 \
	--cacert=$P/etcd/ca.crt --cert=$P/etcd/healthcheck-client.crt --key=$P/etcd/healthcheck-client.key endpoint health

step "kube-apiserver on k8s-control (https://$CONTROL_IP:6443)"
start k8s-control kube-apiserver "$K8S_BIN/kube-apiserver" --advertise-address="$CONTROL_IP" --bind-address=0.0.0.0 \
	--secure-port=6443 --allow-privileged=true --authorization-mode=Node,RBAC --client-ca-file=$P/ca.crt \
	--enable-admission-plugins=NodeRestriction --enable-bootstrap-token-auth=true \
	--etcd-cafile=$P/etcd/ca.crt --etcd-certfile=$P/apiserver-etcd-client.crt --etcd-keyfile=$P/apiserver-etcd-client.key \
	--etcd-servers=https://127.0.0.1:2379 --kubelet-client-certificate=$P/apiserver-kubelet-client.crt \
	--kubelet-client-key=$P/apiserver-kubelet-client.key --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname \
	--proxy-client-cert-file=$P/front-proxy-client.crt --proxy-client-key-file=$P/front-proxy-client.key \
	--requestheader-allowed-names=front-proxy-client --requestheader-client-ca-file=$P/front-proxy-ca.crt \
	--requestheader-extra-headers-prefix=X-Remote-Extra- --requestheader-group-headers=X-Remote-Group \
	--requestheader-username-headers=X-Remote-User --service-account-issuer=https://kubernetes.default.svc.cluster.local \
	--service-account-key-file=$P/sa.pub --service-account-signing-key-file=$P/sa.key \
	--service-cluster-ip-range="$SERVICE_CIDR" --tls-cert-file=$P/apiserver.crt --tls-private-key-file=$P/apiserver.key
wait_ready k8s-control kube-apiserver 120 "${KC[@]}" get --raw /readyz
# kubeadm's admin.conf group, bound to cluster-admin as kubeadm binds it.
"${KC[@]}" create clusterrolebinding kubeadm:cluster-admins --clusterrole=cluster-admin \
	--group=kubeadm:cluster-admins >/dev/null

step "kube-controller-manager and kube-scheduler on k8s-control"
start k8s-control kube-controller-manager "$K8S_BIN/kube-controller-manager" \
	--kubeconfig=/etc/kubernetes/controller-manager.conf --authentication-kubeconfig=/etc/kubernetes/controller-manager.conf \
	--authorization-kubeconfig=/etc/kubernetes/controller-manager.conf --bind-address=127.0.0.1 \
	--client-ca-file=$P/ca.crt --cluster-name=kubernetes --cluster-signing-cert-file=$P/ca.crt \
	--cluster-signing-key-file=$P/ca.key --controllers='*,bootstrapsigner,tokencleaner' --leader-elect=true \
	--requestheader-client-ca-file=$P/front-proxy-ca.crt --root-ca-file=$P/ca.crt \
	--service-account-private-key-file=$P/sa.key --service-cluster-ip-range="$SERVICE_CIDR" \
	--use-service-account-credentials=true
start k8s-control kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig=/etc/kubernetes/scheduler.conf \
	--authentication-kubeconfig=/etc/kubernetes/scheduler.conf --authorization-kubeconfig=/etc/kubernetes/scheduler.conf \
	--bind-address=127.0.0.1 --leader-elect=true
wait_ready k8s-control kube-controller-manager 90 in_node k8s-control curl -skf https://127.0.0.1:10257/healthz
wait_ready k8s-control kube-scheduler 90 in_node k8s-control curl -skf https://127.0.0.1:10259/healthz

# ---------------------------------------------------------------- kubelets, kube-proxies
step "kubelet and kube-proxy on both nodes"
for n in "${NODES[@]}"; do
	extra=()
	[[ $n == k8s-control ]] && extra=(--register-with-taints=node-role.kubernetes.io/control-plane:NoSchedule)
	start "$n" kubelet "$K8S_BIN/kubelet" --config=/var/lib/kubelet/config.yaml \
		--kubeconfig=/etc/kubernetes/kubelet.conf --hostname-override="$n" --node-ip="$(node_ip "$n")" "${extra[@]}"
	start "$n" kube-proxy "$K8S_BIN/kube-proxy" --config=/etc/kubernetes/kube-proxy-config.yaml
done
for n in "${NODES[@]}"; do
	wait_ready "$n" kubelet 120 "${KC[@]}" get node "$n"
done
# As kubeadm: control-plane label (the taint was registered by the kubelet) and pod CIDRs.
"${KC[@]}" label node k8s-control node-role.kubernetes.io/control-plane= \
	node.kubernetes.io/exclude-from-external-load-balancers= --overwrite >/dev/null
for n in "${NODES[@]}"; do
	cidr=$(node_pod_cidr "$n")
	"${KC[@]}" patch node "$n" --type merge -p "{\"spec\":{\"podCIDR\":\"$cidr\",\"podCIDRs\":[\"$cidr\"]}}" >/dev/null 2>&1 || true
done
for n in "${NODES[@]}"; do
	wait_ready "$n" kubelet 120 "${KC[@]}" wait --for=condition=Ready "node/$n" --timeout=2s
	wait_ready "$n" kube-proxy 60 in_node "$n" curl -sf http://127.0.0.1:10256/healthz
done
wait_ready k8s-control kube-controller-manager 60 "${KC[@]}" get serviceaccount default -n default

touch "$STATE/up.done"
echo "$((SECONDS - T0))" >"$STATE/up.seconds"
step "cluster up in $((SECONDS - T0))s"
info "export KUBECONFIG=$STATE/admin.conf"
"${KC[@]}" get nodes -o wide
