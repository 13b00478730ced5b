#!/usr/bin/env bash
# Restart one component of the running local cluster, as an operator restarts a service:
#
#   cluster/restart.sh NODE COMPONENT      # e.g. k8s-worker kubelet, k8s-worker containerd
#
# Stops it (TERM, KILL after 15 s), then starts the same command line again the way up.sh
# starts it: in the node's mount and network namespaces, in its pids cgroup
# /ktrail/NODE/system, with the same pid file (so `down` still finds it). The log is appended
# to, not replaced, so the old process's last lines stay. Waits until it is ready (as up.sh
# checks it) and prints the new pid. Used by the
# fault tests (tests/tests/faults.rs): a traced component restarting must stay traced.
# Takes the cluster lock unless the caller holds it (KTRAIL_CLUSTER_LOCKED). As root.
set -euo pipefail
# shellcheck source=cluster/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# == 2 ]] || { echo "usage: $0 NODE COMPONENT (e.g. k8s-worker kubelet)" >&2; exit 2; }
n=$1 name=$2
[[ $(id -u) == 0 ]] || die "restart needs root"
cluster_lock
pid_file=$RUN/$n.$name.pid
[[ -f $pid_file ]] || die "no $pid_file: is the cluster up (cargo xtask cluster up) and is $name a component of $n?"
old=$(cat "$pid_file")
[[ -r /proc/$old/cmdline ]] || die "$name on $n (pid $old) is not running: nothing to restart (cargo xtask cluster status)"
mapfile -d '' cmd <"/proc/$old/cmdline"
((${#cmd[@]} > 0)) || die "$name on $n (pid $old) has no command line (a zombie?)"

alive() { [[ -e /proc/$1 ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
kill -TERM "$old"
for _ in $(seq 150); do
	alive "$old" || break
	sleep 0.1
done
if alive "$old"; then
	info "$n: $name (pid $old) still running 15 s after TERM: killing it" >&2
	kill -KILL "$old" 2>/dev/null || true
fi

log=$LOGS/$n/$name.log
echo "---- restarted by cluster/restart.sh at $(date -u +%FT%TZ) ----" >>"$log"
# As `start` in up.sh (the pid is the component's: nsenter, sh and setsid all exec).
nsenter --mount="$RUN/$n.mnt" --net="$RUN/$n.net" -- /bin/sh -c \
	'echo $$ >/sys/fs/cgroup/pids/ktrail/'"$n"'/system/cgroup.procs; exec setsid "$@"' sh "${cmd[@]}" \
	>>"$log" 2>&1 </dev/null 9>&- &
new=$!
echo "$new" >"$pid_file"
# Ready as up.sh checks it (the kubelet exits at once if containerd is not serving yet).
ready() {
	case $name in
	containerd) in_node "$n" ctr --address /run/containerd/containerd.sock version ;;
	kubelet) in_node "$n" curl -sf http://127.0.0.1:10248/healthz ;;
	kube-proxy) in_node "$n" curl -sf http://127.0.0.1:10256/healthz ;;
	*) sleep 2 ;;
	esac
}
for _ in $(seq 60); do
	alive "$new" || { tail -15 "$log" >&2; die "$name on $n exited after the restart; log: $log"; }
	ready >/dev/null 2>&1 && break
	sleep 1
done
ready >/dev/null 2>&1 || die "$name on $n (pid $new) not ready 60 s after the restart; log: $log"
info "$n: $name restarted and ready (pid $old -> $new, log $log)" >&2
echo "$new"
