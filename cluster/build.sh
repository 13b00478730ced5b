#!/usr/bin/env bash
# Build (or reuse from the cache) every binary the local cluster runs that Debian does not
# ship in a usable version: Kubernetes, etcd, the distribution registry and crane.
# Go builds run niced with two parallel jobs: this machine has 2 cores shared with others.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

GO=${GO:-go}
command -v "$GO" >/dev/null || die "go not found (expected /usr/local/go/bin/go)"
export GOFLAGS=${GOFLAGS:--p=2} CGO_ENABLED=0
mkdir -p "$CACHE" "$LOGS/build"

# build NAME OUTDIR MODDIR LDFLAGS PKG...
build() {
	local name=$1 out=$2 moddir=$3 ldflags=$4; shift 4
	local log=$LOGS/build/$name.log
	if [[ -f $out/.complete ]]; then
		info "$name: cached in $out"
		return
	fi
	step "building $name (log: $log)"
	local start=$SECONDS tmp=$out.tmp
	rm -rf "$tmp"; mkdir -p "$tmp"
	if ! (cd "$moddir" && nice -n 19 "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/" "$@") >"$log" 2>&1; then
		tail -20 "$log" >&2
		die "build of $name failed; log: $log"
	fi
	# go.etcd.io/etcd/server/v3 builds as "server": name it as etcd's releases do.
	[[ -x $tmp/server ]] && mv "$tmp/server" "$tmp/etcd"
	rm -rf "$out"; mv "$tmp" "$out"
	echo "$(( SECONDS - start ))" >"$out/.complete"
	info "$name: built in $(( SECONDS - start ))s"
}

k8s_ldflags() {
	local v=$K8S_VERSION major minor date
	major=${v#v}; major=${major%%.*}
	minor=${v#v"$major".}; minor=${minor%%.*}
	date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	local f="-s -w" k
	for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
		for k in "gitVersion=$v" "gitMajor=$major" "gitMinor=$minor" "gitTreeState=clean" "buildDate=$date"; do
			f+=" -X $p.$k"
		done
	done
	echo "$f"
}

what=${1:-all}
case $what in all|kubernetes)
	build kubernetes-"$K8S_VERSION" "$(dirname "$K8S_BIN")/bin" "$CLUSTER_DIR/k8s-build" "$(k8s_ldflags)" \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
esac
case $what in all|etcd)
	build etcd-"$ETCD_VERSION" "$ETCD_BIN" "$CLUSTER_DIR/etcd-build" "-s -w" \
		go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3
esac
case $what in all|registry)
	build registry-"$REGISTRY_VERSION" "$REGISTRY_BIN" "$CLUSTER_DIR/registry-build" "-s -w" \
		github.com/distribution/distribution/v3/cmd/registry
esac
case $what in all|crane)
	build crane-"$CRANE_VERSION" "$CRANE_BIN" "$CLUSTER_DIR/crane-build" "-s -w" \
		github.com/google/go-containerregistry/cmd/crane
esac
