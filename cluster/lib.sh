# Shared settings and helpers for the ktrail local cluster scripts (sourced, not run).
# shellcheck shell=bash disable=SC2034  # settings used by the scripts that source this

K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
REGISTRY_VERSION=${REGISTRY_VERSION:-v3.1.2}
CRANE_VERSION=${CRANE_VERSION:-v0.22.1}

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${KTRAIL_CACHE:-/var/cache/ktrail}
STATE=${KTRAIL_CLUSTER_STATE:-/var/lib/ktrail-cluster}
RUN=/run/ktrail-cluster
LOGS=${KTRAIL_CLUSTER_LOGS:-/var/log/ktrail-cluster}

K8S_BIN=$CACHE/kubernetes-$K8S_VERSION/bin
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/bin
REGISTRY_BIN=$CACHE/registry-$REGISTRY_VERSION/bin
CRANE_BIN=$CACHE/crane-$CRANE_VERSION/bin
IMAGES_DIR=$CACHE/images

BRIDGE=ktrail-br0
HOST_IP=192.168.56.1
CONTROL_IP=192.168.56.10
WORKER_IP=192.168.56.20
NODES=(k8s-control k8s-worker)
SERVICE_CIDR=10.96.0.0/12
CLUSTER_CIDR=10.244.0.0/16
REGISTRY_PORT=5000
REGISTRY=$CONTROL_IP:$REGISTRY_PORT
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1

export PATH=/usr/local/go/bin:$PATH

node_ip() { case $1 in k8s-control) echo "$CONTROL_IP" ;; k8s-worker) echo "$WORKER_IP" ;; esac; }
node_pod_cidr() { case $1 in k8s-control) echo 10.244.0.0/24 ;; k8s-worker) echo 10.244.1.0/24 ;; esac; }
node_veth() { case $1 in k8s-control) echo ktrail-ctl ;; k8s-worker) echo ktrail-wrk ;; esac; }

# Each node's network namespace is also bound to $RUN/NODE.net and always entered through
# that handle: the two-node tests in tests/ delete and re-create namespaces with the same
# names (k8s-control, k8s-worker), which must not pull the cluster's nodes from under it.
in_net() { local n=$1; shift; nsenter --net="$RUN/$n.net" -- "$@"; }
in_node() { local n=$1; shift; nsenter --mount="$RUN/$n.mnt" --net="$RUN/$n.net" -- "$@"; }
ns_inode() { stat -L -c %i "$1" 2>/dev/null; }

# One up/down at a time on this machine (engineers share it): the caller holds fd 9 on the
# lock file; scripts it runs see KTRAIL_CLUSTER_LOCKED and do not lock again. Processes
# started by up close fd 9 (see start in up.sh), or they would hold the lock forever.
LOCK=/run/lock/ktrail-cluster.lock
cluster_lock() {
	[[ -n ${KTRAIL_CLUSTER_LOCKED:-} ]] && return
	mkdir -p "$(dirname "$LOCK")"
	exec 9>"$LOCK"
	if ! flock -n 9; then
		info "another cluster up/down is running (lock $LOCK): waiting up to 20 minutes"
		flock -w 1200 9 || die "another cluster up/down still holds $LOCK"
	fi
	export KTRAIL_CLUSTER_LOCKED=1
}

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
