#!/usr/bin/env bash
# Show each component of the local cluster: process, health check, log. Exit 0 only if all
# are up and both nodes are Ready.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

P=/etc/kubernetes/pki
ok=0
check() { # check NODE NAME HEALTH-CMD...
	local n=$1 name=$2; shift 2
	local f=$RUN/$n.$name.pid pid="" state health
	[[ -f $f ]] && pid=$(cat "$f")
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then state="running pid $pid"; else state="NOT RUNNING"; ok=1; fi
	if [[ $state == running* ]] && "$@" >/dev/null 2>&1; then health=healthy; else health=UNHEALTHY; ok=1; fi
	printf '%-12s %-24s %-18s %-10s %s\n' "$n" "$name" "$state" "$health" "$LOGS/$n/$name.log"
}
if [[ ! -f $STATE/up.done ]]; then
	echo "cluster is not up (state: $STATE)"
	ip netns list 2>/dev/null | grep -E '^k8s-(control|worker)' && echo "(network namespaces exist: run cargo xtask cluster down)"
	exit 1
fi
printf '%-12s %-24s %-18s %-10s %s\n' NODE COMPONENT PROCESS HEALTH LOG
check k8s-control registry curl -sf "http://$REGISTRY/v2/"
for n in "${NODES[@]}"; do check "$n" containerd in_node "$n" ctr --address /run/containerd/containerd.sock version; done
check k8s-control etcd in_node k8s-control "$ETCD_BIN/etcdctl" --endpoints=https://127.0.0.1:2379 \
	--cacert=$P/etcd/ca.crt --cert=$P/etcd/healthcheck-client.crt --key=$P/etcd/healthcheck-client.key endpoint health
check k8s-control kube-apiserver curl -sf --cacert "$STATE/pki/ca.crt" "https://$CONTROL_IP:6443/livez"
check k8s-control kube-controller-manager in_node k8s-control curl -skf https://127.0.0.1:10257/healthz
check k8s-control kube-scheduler in_node k8s-control curl -skf https://127.0.0.1:10259/healthz
for n in "${NODES[@]}"; do
	check "$n" kubelet in_node "$n" curl -sf http://127.0.0.1:10248/healthz
	check "$n" kube-proxy in_node "$n" curl -sf http://127.0.0.1:10256/healthz
done
echo
kubectl --kubeconfig "$STATE/admin.conf" get nodes -o wide || ok=1
for n in "${NODES[@]}"; do
	kubectl --kubeconfig "$STATE/admin.conf" wait --for=condition=Ready "node/$n" --timeout=1s >/dev/null 2>&1 || ok=1
done
echo "admin kubeconfig: $STATE/admin.conf"
exit $ok
