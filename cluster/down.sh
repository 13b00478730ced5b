#!/usr/bin/env bash
# Remove everything `up` made: processes (components, shims, containers), mount namespaces,
# network namespaces, the bridge and veths, host routes and iptables rules, cgroups, the
# directories it created, its state; put back the host sysctls the kubelet changed.
# Logs in $LOGS are kept (for post-mortems) and cleared by the next `up`.
# Safe to run repeatedly and on a half-made cluster.
set -uo pipefail
shopt -s extglob
. "$(dirname "$0")/lib.sh"
[[ $(id -u) == 0 ]] || die "cluster down needs root"
cluster_lock

# The nodes' network namespaces, by inode (see in_net in lib.sh).
declare -A NS_INODES=()
for n in "${NODES[@]}"; do
	ino=$(cat "$RUN/$n.netns-inode" 2>/dev/null || true)
	grep -q " $RUN/$n.net " /proc/self/mountinfo && ino=$(ns_inode "$RUN/$n.net")
	[[ -n $ino ]] && NS_INODES[$n]=$ino
done

step "stopping cluster processes"
# Components in three stages (node agents; control plane; etcd, containerd, registry), each
# TERMed at once, KILLed if still there after its grace period.
gone() { [[ ! -e /proc/$1 ]] || [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) == Z ]]; }
stop_stage() { # stop_stage GRACE-SECONDS NAME...
	local grace=$1; shift
	local -A spids=()
	local name n f pid k
	for name in "$@"; do
		for n in "${NODES[@]}"; do
			f=$RUN/$n.$name.pid
			[[ -f $f ]] || continue
			pid=$(cat "$f"); rm -f "$f"
			gone "$pid" && continue
			spids[$n/$name]=$pid
			kill -TERM "$pid" 2>/dev/null
		done
	done
	for _ in $(seq 1 $((grace * 10))); do
		local alive=0
		for k in "${!spids[@]}"; do gone "${spids[$k]}" || alive=1; done
		((alive)) || break
		sleep 0.1
	done
	for k in "${!spids[@]}"; do
		if ! gone "${spids[$k]}"; then
			kill -KILL "${spids[$k]}" 2>/dev/null
			info "$k: killed (pid ${spids[$k]}, still running ${grace}s after TERM)"
		else
			info "$k: stopped (pid ${spids[$k]})"
		fi
	done
}
stop_stage 5 kube-proxy kubelet
stop_stage 10 kube-scheduler kube-controller-manager kube-apiserver
stop_stage 10 etcd containerd registry
# Everything else: shims and the pods' processes (in the /ktrail cgroups) and anything left
# in the nodes' network namespaces.
for round in $(seq 1 30); do
	left=()
	while read -r pid; do [[ -n $pid ]] && left+=("$pid"); done < <(
		find /sys/fs/cgroup/*/ktrail -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
	for ino in "${NS_INODES[@]}"; do
		for p in /proc/[0-9]*; do
			[[ $(readlink "$p/ns/net" 2>/dev/null) == "net:[$ino]" ]] && left+=("${p#/proc/}")
		done
	done
	((${#left[@]} == 0)) && break
	((round == 1)) && info "killing ${#left[@]} remaining processes (shims, containers)"
	# SIGKILL is enough for shims and containers (runc's init is pid 1 in its pid namespace).
	kill -KILL "${left[@]}" 2>/dev/null
	sleep 0.2
done
# SIGKILL is asynchronous: wait until no cluster process is left but zombies.
for _ in $(seq 1 50); do
	busy=0
	for p in /proc/[0-9]*; do
		pid=${p#/proc/}
		[[ $(readlink "$p/exe" 2>/dev/null) == @($CACHE/*|/usr/bin/containerd*|/usr/sbin/runc) ]] && ! gone "$pid" && busy=1
	done
	((busy)) || break
	sleep 0.1
done

step "mount namespaces"
for n in "${NODES[@]}"; do
	for f in "$RUN/$n.mnt" "$RUN/$n.net"; do
		grep -q " $f " /proc/self/mountinfo && umount "$f" && info "released $f"
	done
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
	[[ -e /run/netns/$n ]] || continue
	# Only ours: the same inode as our handle, or a crash's leftover next to our state.
	if [[ $(ns_inode "/run/netns/$n") == "${NS_INODES[$n]:-none}" ]] || [[ -z ${NS_INODES[$n]:-} && -d $STATE ]]; then
		ip netns del "$n" && info "deleted netns $n"
	else
		info "left netns $n alone: it is not this cluster's (the two-node tests use the same name)"
	fi
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
