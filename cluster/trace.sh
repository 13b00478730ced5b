#!/usr/bin/env bash
# ktrail on the local cluster, agents attached from the start:
#
#   cluster/trace.sh start BIN_DIR STATE_DIR   # (re)starts the cluster, traced
#   cluster/trace.sh stop STATE_DIR            # stops agents and collector (the cluster stays)
#
# start: makes a certificate set (mutual TLS, as deployed), starts ktrail-collector on the
# host (192.168.56.1:7700, data in STATE_DIR/data), takes the cluster down, brings it up
# again and starts a ktrail-agent in each node's network namespace as soon as that
# namespace exists — before the Kubernetes components start — so every long-lived HTTP/2
# connection (kube-apiserver ↔ etcd, every watch, kubelet ↔ containerd) is seen from its
# first byte and its headers decode (an agent attached later sees HPACK references to
# entries it never saw; docs/protocols.md). Used by `cargo xtask demo` and the flows
# acceptance test. Logs: STATE_DIR/{collector,agent-NODE,up}.log. As root.
# KTRAIL_TRACE_WORKER_ARGS adds arguments to k8s-worker's agent (the acceptance test runs
# it with --clock-offset-ms 250: a node whose clock is off); KTRAIL_TRACE_COLLECTOR_ARGS adds
# arguments to the collector (the fault tests store uncompressed, to grep the store).
set -euo pipefail
# shellcheck source=cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { echo "usage: $0 start BIN_DIR STATE_DIR | stop STATE_DIR" >&2; exit 2; }

make_certs() {
	local d=$1
	[[ -s $d/cli.key ]] && return
	mkdir -p "$d"
	local ext
	ext=$(mktemp)
	printf 'subjectAltName=DNS:ktrail-collector,DNS:localhost,IP:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$HOST_IP" >"$ext"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
		-subj /CN=ktrail-trace-ca -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
	for n in collector agent cli; do
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=ktrail-$n" \
			-keyout "$d/$n.key" -out "$d/$n.csr" 2>/dev/null
		openssl x509 -req -in "$d/$n.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
			-days 30 -extfile "$ext" -out "$d/$n.crt" 2>/dev/null
		rm -f "$d/$n.csr"
	done
	rm -f "$ext"
}

stop() {
	local state=$1
	for f in "$state"/agent-*.pid "$state"/collector.pid; do
		[[ -e $f ]] || continue
		kill -TERM "$(cat "$f")" 2>/dev/null || true
	done
	# Agents detach their uprobes on the way out (about 0.1 s each).
	for _ in $(seq 300); do
		local alive=0
		for f in "$state"/agent-*.pid "$state"/collector.pid; do
			[[ -e $f ]] && kill -0 "$(cat "$f")" 2>/dev/null && alive=1
		done
		((alive)) || break
		sleep 0.1
	done
	for f in "$state"/agent-*.pid "$state"/collector.pid; do
		[[ -e $f ]] || continue
		kill -KILL "$(cat "$f")" 2>/dev/null || true
		rm -f "$f"
	done
}

start() {
	local bin=$1 state=$2
	for b in ktrail-collector ktrail-agent; do
		[[ -x $bin/$b ]] || { echo "no $bin/$b: build it first (cargo build --bins)" >&2; exit 1; }
	done
	mkdir -p "$state"
	stop "$state"
	rm -rf "$state/data"
	make_certs "$state/certs"
	local c=$state/certs
	step "collector on $HOST_IP:7700 (mutual TLS), data in $state/data"
	# shellcheck disable=SC2086 # words: extra arguments
	setsid "$bin/ktrail-collector" --data-dir "$state/data" --listen 0.0.0.0:7700 \
		--tls-cert "$c/collector.crt" --tls-key "$c/collector.key" --tls-ca "$c/ca.crt" \
		${KTRAIL_TRACE_COLLECTOR_ARGS:-} >"$state/collector.log" 2>&1 9>&- &
	echo $! >"$state/collector.pid"
	step "cluster down, then up, with an agent in each node from its first process"
	bash "$CLUSTER_DIR/down.sh" >"$state/down.log" 2>&1
	bash "$CLUSTER_DIR/up.sh" >"$state/up.log" 2>&1 9>&- &
	local up=$!
	local started=()
	for _ in $(seq 6000); do
		for n in "${NODES[@]}"; do
			[[ " ${started[*]} " == *" $n "* ]] && continue
			[[ -e $RUN/$n.net ]] || continue
			setsid nsenter --net="$RUN/$n.net" -- "$bin/ktrail-agent" --node-name "$n" \
				--collector "https://$HOST_IP:7700" --tls-server-name ktrail-collector \
				--tls-cert "$c/agent.crt" --tls-key "$c/agent.key" --tls-ca "$c/ca.crt" \
				$([[ $n == k8s-worker ]] && echo "${KTRAIL_TRACE_WORKER_ARGS:-}") \
				>"$state/agent-$n.log" 2>&1 9>&- &
			echo $! >"$state/agent-$n.pid"
			started+=("$n")
			info "agent on $n (pid $!)"
		done
		((${#started[@]} == ${#NODES[@]})) && break
		kill -0 "$up" 2>/dev/null || break
		sleep 0.05
	done
	if ! wait "$up"; then
		echo "cluster up failed: see $state/up.log" >&2
		tail -20 "$state/up.log" >&2
		exit 1
	fi
	((${#started[@]} == ${#NODES[@]})) || { echo "node namespaces never appeared" >&2; exit 1; }
	info "cluster up, traced; collector https://$HOST_IP:7700; CLI: --collector https://127.0.0.1:7700 --tls-server-name ktrail-collector --tls-cert $c/cli.crt --tls-key $c/cli.key --tls-ca $c/ca.crt"
}

case ${1:-} in
start) [[ $# == 3 ]] || usage; start "$2" "$3" ;;
stop) [[ $# == 2 ]] || usage; stop "$2" ;;
*) usage ;;
esac
