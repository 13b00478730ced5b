#!/usr/bin/env bash
# Builds the repository's Dockerfile as a user with Docker would, then checks the images.
#
# No Docker engine runs on this project's machines and Docker Hub is out of reach, so:
# - the build runs with buildah (Debian's package), which reads the same Dockerfile;
# - the Dockerfile's two base images are assembled here under the names it asks for,
#   instead of pulled: `debian:bookworm-slim` is debootstrap's minbase bookworm with the
#   same apt sources as Docker Hub's image (bookworm, -updates, -security), and
#   `rust:1-bookworm` is that plus the compilers buildpack-deps carries and this machine's
#   rustup stable toolchain (Docker Hub's image is rustup stable on bookworm too).
# Every step of the Dockerfile itself runs for real: apt-get from Debian's mirror, the
# bpf-linker install from crates.io, the release build, the stripping, both final stages.
#
# The one change to what Docker Hub's images hold: this machine's extra CA certificates
# (/usr/local/share/ca-certificates) go into the rust image, for its TLS-inspecting proxy.
#
# Usage: scripts/dockerfile-check.sh [--deploy]   (as root; ~25 min cold, base images cached)
#   --deploy  then push both images to the local cluster's registry (tag `dockerfile`),
#             `kubectl apply -k` deploy/ with them, wait until the agents run on both
#             nodes and stream to the collector over mutual TLS, and `kubectl delete -k`.
#             Brings the local cluster up if it is down (`cargo xtask cluster up`).
# Env:   KTRAIL_DOCKERFILE_WORK  cache directory (default /var/tmp/ktrail-dockerfile)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${KTRAIL_DOCKERFILE_WORK:-/var/tmp/ktrail-dockerfile}
mirror=http://deb.debian.org/debian
slim=docker.io/library/debian:bookworm-slim
rust=docker.io/library/rust:1-bookworm
tag=dockerfile-check
deploy=false
case ${1:-} in
  "") ;;
  --deploy) deploy=true ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) printf 'dockerfile-check: unknown argument %q (--deploy or nothing; --help explains)\n' "$1" >&2; exit 2 ;;
esac

step() { printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf 'dockerfile-check: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (buildah and debootstrap need it here)"
for tool in buildah debootstrap; do
  if ! command -v "$tool" >/dev/null; then
    step "installing $tool from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$tool" >/dev/null
  fi
done
toolchain=$(rustup toolchain list 2>/dev/null | awk '/^stable/ {print $1; exit}') \
  || die "rustup is missing: run \`cargo xtask setup\` first"
[[ -n $toolchain ]] || die "no rustup stable toolchain: run \`rustup toolchain install stable\`"
toolchain_dir=${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$toolchain
mkdir -p "$work"

if ! buildah inspect --type image "$slim" >/dev/null 2>&1; then
  if [[ ! -f $work/rootfs-slim/etc/debian_version ]]; then
    step "debootstrap bookworm minbase into $work/rootfs-slim (~2 min)"
    rm -rf "$work/rootfs-slim"
    debootstrap --variant=minbase bookworm "$work/rootfs-slim" "$mirror" >"$work/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $work/debootstrap.log"
  fi
  step "assembling $slim from it"
  ctr=$(buildah from scratch)
  mnt=$(buildah mount "$ctr")
  cp -a "$work/rootfs-slim/." "$mnt/"
  rm -f "$mnt/etc/apt/sources.list"
  cat >"$mnt/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$mnt"/var/lib/apt/lists/* "$mnt"/var/cache/apt/archives/*.deb
  buildah umount "$ctr" >/dev/null
  buildah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit -q "$ctr" "$slim" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

if ! buildah inspect --type image "$rust" >/dev/null 2>&1; then
  step "assembling $rust: $slim + compilers + rustup's $toolchain"
  ctr=$(buildah from --pull=never "$slim")
  buildah run --network host "$ctr" -- sh -c 'apt-get update -q >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      ca-certificates curl git gcc g++ libc6-dev make pkg-config >/dev/null &&
    rm -rf /var/lib/apt/lists/*'
  mnt=$(buildah mount "$ctr")
  # Where egress passes a TLS-inspecting proxy (it does here), the build reaches
  # crates.io only if the image trusts the proxy's CA as this machine does: the same
  # step a user behind such a proxy takes for their base image.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$mnt/usr/local/share/ca-certificates/"
    buildah run "$ctr" -- update-ca-certificates >/dev/null
  fi
  mkdir -p "$mnt/usr/local/rust" "$mnt/usr/local/cargo/bin"
  cp -a "$toolchain_dir/." "$mnt/usr/local/rust/"
  for bin in "$mnt"/usr/local/rust/bin/*; do
    ln -s "../../rust/bin/$(basename "$bin")" "$mnt/usr/local/cargo/bin/"
  done
  buildah umount "$ctr" >/dev/null
  buildah config --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit -q "$ctr" "$rust" >/dev/null
  buildah rm "$ctr" >/dev/null
fi

for target in agent collector; do
  step "buildah bud --target $target (the Dockerfile, unchanged; the first is the long one)"
  buildah bud --pull=never --network host --layers --target "$target" \
    -t "localhost/ktrail/ktrail-$target:$tag" -f "$root/Dockerfile" "$root"
done

step "checking the images"
check() { # image, expected user, command...
  local image=$1 user=$2; shift 2
  local got
  got=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$image")
  [[ $got == "$user" ]] || die "$image runs as user '$got', expected '$user'"
  local ctr
  ctr=$(buildah from --pull=never "$image")
  if ! out=$(buildah run "$ctr" -- "$@" 2>&1); then
    buildah rm "$ctr" >/dev/null
    die "$image: \`$*\` failed: $out"
  fi
  buildah rm "$ctr" >/dev/null
  printf '    %s: `%s` ok (%s)\n' "$image" "$*" "$(head -n1 <<<"$out")"
}
agent=localhost/ktrail/ktrail-agent:$tag
collector=localhost/ktrail/ktrail-collector:$tag
check "$agent" "" /usr/local/bin/ktrail-agent --help
check "$collector" 65532:65532 /usr/local/bin/ktrail-collector --help
check "$collector" 65532:65532 /usr/local/bin/ktrail --help
# The agent carries its eBPF object inside the binary (agent/build.rs): a build that
# skipped or broke the eBPF step would not have the probes' section names in it.
ctr=$(buildah from --pull=never "$agent")
mnt=$(buildah mount "$ctr")
grep -q "raw_tp/sys_exit" "$mnt/usr/local/bin/ktrail-agent" \
  || { buildah umount "$ctr" >/dev/null; buildah rm "$ctr" >/dev/null; die "$agent: no eBPF programs embedded in ktrail-agent"; }
buildah umount "$ctr" >/dev/null
buildah rm "$ctr" >/dev/null
printf '    %s: eBPF object embedded\n' "$agent"
buildah images --format '    {{.Name}}:{{.Tag}} {{.Size}}' | grep "ktrail-.*:$tag"
step "the Dockerfile builds both images; they are in buildah's local storage as $agent and $collector"
$deploy || exit 0

registry=192.168.56.10:5000
export KUBECONFIG=/var/lib/ktrail-cluster/admin.conf
if ! (cd "$root" && cargo xtask cluster status >/dev/null 2>&1); then
  step "the local cluster is down: cargo xtask cluster up"
  (cd "$root" && cargo xtask cluster up)
fi
[[ -f $root/deploy/certs/ca.crt ]] || (cd "$root" && cargo xtask certs)
for target in agent collector; do
  step "buildah push ktrail-$target to $registry/ktrail/ktrail-$target:dockerfile"
  buildah push -q --tls-verify=false "localhost/ktrail/ktrail-$target:$tag" \
    "docker://$registry/ktrail/ktrail-$target:dockerfile"
done
# deploy/ as it is, with only the image tags changed (kustomize wants a relative path).
mkdir -p "$root/target/tmp"
overlay=$(mktemp -d -p "$root/target/tmp" dockerfile-deploy.XXXXXX)
{
  echo "apiVersion: kustomize.config.k8s.io/v1beta1"
  echo "kind: Kustomization"
  echo "resources:"
  echo "  - $(realpath --relative-to="$overlay" "$root/deploy")"
  echo "images:"
  for target in agent collector; do
    echo "  - name: $registry/ktrail/ktrail-$target"
    echo "    newTag: dockerfile"
  done
} >"$overlay/kustomization.yaml"
# The deploy test uses the same namespace: wait for the cluster's lock as it does.
exec 9>/run/lock/ktrail-cluster.lock
step "waiting for the local cluster's lock"
flock 9
cleanup() {
  kubectl delete -k "$overlay" --ignore-not-found --wait=true --timeout=180s >/dev/null 2>&1 || true
  rm -rf "$overlay"
}
trap cleanup EXIT
if kubectl get namespace ktrail-system >/dev/null 2>&1; then
  die "namespace ktrail-system exists already: run \`kubectl delete -k deploy/\` first"
fi
step "kubectl apply -k deploy/ with the Dockerfile's images"
kubectl apply -k "$overlay"
kubectl -n ktrail-system rollout status daemonset/ktrail-agent --timeout=300s
kubectl -n ktrail-system rollout status deployment/ktrail-collector --timeout=300s
kubectl -n ktrail-system get pods -o wide
for node in k8s-control k8s-worker; do
  image=$(kubectl -n ktrail-system get pods -l app.kubernetes.io/name=ktrail-agent \
    --field-selector "spec.nodeName=$node" -o jsonpath='{.items[0].spec.containers[0].image}')
  [[ $image == "$registry/ktrail/ktrail-agent:dockerfile" ]] \
    || die "the agent on $node runs '$image', not the Dockerfile's image"
done
step "waiting for both nodes' agents to stream to the collector (mutual TLS)"
connected() {
  logs=$(kubectl -n ktrail-system logs deployment/ktrail-collector 2>/dev/null || true)
  grep "agent connected" <<<"$logs" | grep -q "k8s-control" \
    && grep "agent connected" <<<"$logs" | grep -q "k8s-worker"
}
for _ in $(seq 60); do
  connected && break
  sleep 2
done
connected || die "both agents did not connect within 120 s; the collector said: $logs"
grep "agent connected" <<<"$logs" | sed 's/^/    /'
step "kubectl delete -k"
trap - EXIT
cleanup
left=$(pgrep -a -f '/usr/local/bin/ktrail-(agent|collector)' || true)
[[ -z $left ]] || die "processes left after delete: $left"
step "the Dockerfile's images ran as deploy/ runs them on both nodes, and left nothing behind"
