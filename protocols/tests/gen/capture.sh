#!/usr/bin/env bash
# Regenerates protocols/tests/vectors from real clients and servers (see
# ../vectors/README.md). Needs root (containerd, runc), Go, and the binaries
# cluster/build.sh leaves in /var/cache/ktrail (etcd, kube-apiserver,
# kube-scheduler, registry, crane) and the image layers of cluster/images.sh.
# Everything it starts listens on 127.0.0.1 or on sockets under a scratch
# directory, runs under `nice -n 19`, and is stopped by pid at the end.
#
#   protocols/tests/gen/capture.sh [k8s] [http] [etcd] [apiserver] [cri]   (default: all)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vectors=${KTRAIL_VECTORS_OUT:-$(cd "$here/../vectors" && pwd)}
cache=${KTRAIL_CACHE:-/var/cache/ktrail}
what=("$@")
[[ ${#what[@]} -gt 0 ]] || what=(k8s http etcd apiserver cri)

work=$(mktemp -d /tmp/ktrail-capture.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

echo "==> building the generator"
(cd "$here" && GOFLAGS=-mod=mod go build -o "$work/gen" .)
gen=$work/gen

for w in "${what[@]}"; do
	case $w in
	k8s) (cd "$vectors" && "$gen" k8s k8s) ;;
	http) (cd "$vectors" && "$gen" http .) ;;
	etcd) (cd "$vectors" && ETCD=$cache/etcd-v3.6.16/bin/etcd "$gen" etcd .) ;;
	apiserver)
		mkdir -p "$work/api"
		(cd "$work/api" && ETCD=$cache/etcd-v3.6.16/bin/etcd K8S_BIN=$cache/kubernetes-v1.34.4/bin "$gen" apiserver .)
		for f in kubectl-run kubectl-get-watch kubectl-patch-status kubectl-delete; do
			cp "$work/api/$f.txt" "$vectors/$f.txt"
		done
		# The scheduler's main connection is its second (the first reads
		# the authentication configmap).
		cp "$work/api/kube-scheduler-conn2.txt" "$vectors/kube-scheduler.txt"
		# kube-apiserver opens one etcd connection per resource: keep the pods one.
		key=$(printf '/registry/pods/default/mynginx' | od -An -tx1 | tr -d ' \n')
		pods=$(grep -l "$key" "$work"/api/apiserver-etcd*.txt | head -1)
		cp "$pods" "$vectors/apiserver-etcd-pods.txt"
		sed -i '1s/.*/# kube-scheduler: recorded by protocols\/tests\/gen apiserver (relay read chunks; its main connection)/' "$vectors/kube-scheduler.txt"
		sed -i '1s/.*/# apiserver-etcd-pods: recorded by protocols\/tests\/gen apiserver (the kube-apiserver → etcd connection that carries \/registry\/pods)/' "$vectors/apiserver-etcd-pods.txt"
		;;
	cri)
		# A private registry with the cluster's nginx and pause images.
		port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
		reg=127.0.0.1:$port
		mkdir -p "$work/reg"
		cat >"$work/reg.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/reg
http:
  addr: $reg
log:
  level: error
EOF
		nice -n 19 "$cache/registry-v3.1.2/bin/registry" serve "$work/reg.yml" >"$work/reg.log" 2>&1 &
		pids+=($!)
		for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
		crane="$cache/crane-v0.22.1/bin/crane --insecure"
		$crane append -f "$cache/images/nginx-layer.tar" -t "$reg/library/nginx:1.22.1" >/dev/null
		$crane mutate "$reg/library/nginx:1.22.1" --set-platform linux/amd64 --cmd 'nginx,-g,daemon off;' \
			-e PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -t "$reg/library/nginx:1.22.1" >/dev/null
		$crane append -f "$cache/images/pause-layer.tar" -t "$reg/pause:3.10.1" >/dev/null
		$crane mutate "$reg/pause:3.10.1" --set-platform linux/amd64 --entrypoint /pause -t "$reg/pause:3.10.1" >/dev/null
		# A private containerd (never the cluster's): own root, state, sockets.
		c=$work/containerd
		mkdir -p "$c/cni"
		write_config() { # write_config SANDBOX_IMAGE
			cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = true
  sandbox_image = "$1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$c/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."$reg"]
    endpoint = ["http://$reg"]
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
EOF
		}
		start_containerd() {
			nice -n 19 containerd --config "$c/config.toml" >"$c/log" 2>&1 &
			cpid=$!
			pids+=("$cpid")
			for _ in $(seq 100); do [[ -S $c/containerd.sock ]] && break; sleep 0.1; done
		}
		# The failing calls: the default pause image cannot be pulled here.
		write_config registry.k8s.io/pause:3.10
		start_containerd
		(cd "$vectors" && CRI_SOCKET=$c/containerd.sock "$gen" cri .)
		kill "$cpid"; wait "$cpid" 2>/dev/null || true
		rm -f "$c/containerd.sock"
		# The successful run.
		write_config "$reg/pause:3.10.1"
		start_containerd
		(cd "$vectors" && CRI_SOCKET=$c/containerd.sock CRI_IMAGE=$reg/library/nginx:1.22.1 "$gen" cri-run .)
		;;
	*) echo "unknown vector set $w" >&2; exit 2 ;;
	esac
done
echo "==> done; now update the expectations in protocols/tests/vectors.rs:"
echo "    cargo test -p ktrail-protocols --test explore -- --ignored --nocapture explore"
