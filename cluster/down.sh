#!/usr/bin/env bash
# Remove everything `up` made: processes (components, shims, containers), mount namespaces,
# network namespaces, the bridge and veths, host routes and iptables rules, cgroups, the
# directories it created, its state; put back the host sysctls the kubelet changed.
# Logs in $LOGS are kept (for post-mortems) and cleared by the next `up`.
# Safe to run repeatedly and on a half-made cluster.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
[[ $(id -u) == 0 ]] || die "cluster down needs root"

step "stopping cluster processes"
# Components: TERM the node agents first (so they do not restart what goes away), then the
# rest, all at once; KILL whatever has not exited 10 s later.
declare -A PIDS=()
for name in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd containerd registry; do
	for n in "${NODES[@]}"; do
		f=$RUN/$n.$name.pid
		[[ -f $f ]] || continue
		pid=$(cat "$f")
		kill -0 "$pid" 2>/dev/null && PIDS[$n/$name]=$pid && kill -TERM "$pid" 2>/dev/null
		rm -f "$f"
	done
	[[ $name == kubelet ]] && sleep 1
done
for _ in $(seq 1 100); do
	alive=0
	for k in "${!PIDS[@]}"; do kill -0 "${PIDS[$k]}" 2>/dev/null && alive=1; done
	((alive)) || break
	sleep 0.1
done
for k in "${!PIDS[@]}"; do
	if kill -KILL "${PIDS[$k]}" 2>/dev/null; then info "$k: killed (pid ${PIDS[$k]}, did not exit on TERM)"; else info "$k: stopped (pid ${PIDS[$k]})"; fi
done
# Everything else: shims and the pods' processes (in the /ktrail cgroups) and anything left
# in the nodes' network namespaces.
for round in $(seq 1 30); do
	pids=$(cat /sys/fs/cgroup/pids/ktrail/cgroup.procs $(find /sys/fs/cgroup/*/ktrail -name cgroup.procs 2>/dev/null) 2>/dev/null | sort -u)
	for n in "${NODES[@]}"; do
		ip netns list 2>/dev/null | grep -q "^$n\b" && pids+=" $(ip netns pids "$n" 2>/dev/null | tr '\n' ' ')"
	done
	pids=$(echo $pids)
	[[ -z $pids ]] && break
	((round == 1)) && info "killing $(wc -w <<<"$pids") remaining processes (shims, containers)"
	# Freeze-free: SIGKILL is enough for shims and containers (runc's init is pid 1 in its pidns).
	kill -KILL $pids 2>/dev/null
	sleep 0.2
done

step "mount namespaces"
for n in "${NODES[@]}"; do
	if mountpoint -q "$RUN/$n.mnt" 2>/dev/null || grep -q " $RUN/$n.mnt " /proc/self/mountinfo; then
		umount "$RUN/$n.mnt" && info "released $RUN/$n.mnt"
	fi
done
grep -q " $RUN " /proc/self/mountinfo && umount -l "$RUN"
rm -rf "$RUN"

step "cgroups"
for h in /sys/fs/cgroup/*/ktrail; do
	[[ -d $h ]] || continue
	find "$h" -depth -type d -exec rmdir {} + 2>/dev/null
	[[ -d $h ]] && info "could not remove $h (still busy)" || info "removed $h"
done

step "network"
for n in "${NODES[@]}"; do
	if ip netns list | grep -q "^$n\b"; then ip netns del "$n" && info "deleted netns $n"; fi
done
for v in ktrail-ctl ktrail-wrk; do ip link del "$v" 2>/dev/null; done
if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" && info "deleted bridge $BRIDGE"; fi
ip route del 10.244.0.0/24 2>/dev/null
ip route del 10.244.1.0/24 2>/dev/null
iptables -S FORWARD 2>/dev/null | grep -- '--comment ktrail-cluster' | sed 's/^-A /-D /' | while read -r rule; do
	# shellcheck disable=SC2086
	iptables $rule && info "removed iptables rule: $rule"
done

step "host sysctls and state"
if [[ -f $STATE/sysctl.orig ]]; then
	while read -r kv; do sysctl -qw "$kv"; done <"$STATE/sysctl.orig"
	info "restored $(tr '\n' ' ' <"$STATE/sysctl.orig")"
fi
if [[ -f $STATE/created-dirs ]]; then
	while read -r d; do rmdir "$d" 2>/dev/null; rmdir "$(dirname "$d")" 2>/dev/null; done <"$STATE/created-dirs"
fi
rm -rf "$STATE"
info "removed $STATE (logs kept in $LOGS until the next up)"
step "cluster down"
