#!/usr/bin/env bash
# Assemble the cluster's images (no public registry is reachable) and push them to the
# registry on k8s-control:
#   library/nginx:1.22.1 (+latest) — Debian bookworm's nginx package and the shared libraries
#       it links (from their .deb files), busybox-static for a shell; serves on port 80.
#   pause:3.10.1 — Kubernetes' build/pause/linux/pause.c from the k8s.io/kubernetes module,
#       compiled with gcc -static as Kubernetes' Makefile does.
# Layers are cached in $IMAGES_DIR; pushing is done on every `up` (the registry is fresh).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

CRANE="$CRANE_BIN/crane --insecure"
NGINX_DEBS=(nginx nginx-common libc6 libcrypt1 libpcre2-8-0 libssl3 zlib1g)
mkdir -p "$IMAGES_DIR"

build_nginx_layer() {
	local out=$IMAGES_DIR/nginx-layer.tar
	[[ -f $out ]] && return
	step "assembling nginx image from Debian packages: ${NGINX_DEBS[*]}"
	command -v busybox >/dev/null || die "busybox-static is not installed (apt-get install busybox-static)"
	local work; work=$(mktemp -d)
	(cd "$work" && apt-get download "${NGINX_DEBS[@]}" >"$work/apt.log" 2>&1) \
		|| { cat "$work/apt.log" >&2; die "apt-get download ${NGINX_DEBS[*]} failed"; }
	local root=$work/rootfs
	mkdir -p "$root"
	for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$root"; done
	rm -rf "$root"/usr/share/{doc,man,lintian,locale} "$root"/etc/init.d "$root"/etc/logrotate.d
	mkdir -p "$root"/{bin,tmp,run,proc,sys,dev,var/www/html,var/log/nginx,var/lib/nginx/body,var/lib/nginx/proxy} \
		"$root"/var/lib/nginx/{fastcgi,uwsgi,scgi}
	chmod 1777 "$root/tmp"
	cp "$(command -v busybox)" "$root/bin/busybox"
	for a in sh ls cat echo ps wget sleep env id hostname ip ifconfig nc cp mv rm mkdir grep head tail; do
		ln -sf busybox "$root/bin/$a"
	done
	cat >"$root/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/sh
P
	cat >"$root/etc/group" <<'G'
root:x:0:
www-data:x:33:
nogroup:x:65534:
G
	cat >"$root/etc/nginx/nginx.conf" <<'N'
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr notice;
events { worker_connections 256; }
http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	access_log /dev/stdout;
	sendfile on;
	server {
		listen 80 default_server;
		root /var/www/html;
		index index.html;
		location / { try_files $uri $uri/ =404; }
	}
}
N
	cp "$root/usr/share/nginx/html/index.html" "$root/var/www/html/index.html" 2>/dev/null \
		|| echo '<h1>Welcome to nginx!</h1>' >"$root/var/www/html/index.html"
	# The image must actually run: check the binary resolves its libraries inside the rootfs.
	chroot "$root" /usr/sbin/nginx -t >"$work/nginx-t.log" 2>&1 \
		|| { cat "$work/nginx-t.log" >&2; die "nginx -t failed inside the assembled rootfs"; }
	rm -f "$root/run/nginx.pid"
	tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$out.tmp" .
	mv "$out.tmp" "$out"
	rm -rf "$work"
	info "nginx layer: $out ($(du -h "$out" | cut -f1))"
}

build_pause_layer() {
	local out=$IMAGES_DIR/pause-layer.tar
	[[ -f $out ]] && return
	step "compiling pause (Kubernetes build/pause/linux/pause.c, gcc -static)"
	local src
	src=$(cd "$CLUSTER_DIR/k8s-build" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
	[[ -f $src ]] || die "pause.c not found at $src"
	local work; work=$(mktemp -d)
	gcc -Os -Wall -Werror -static -DVERSION=v3.10.1-ktrail -o "$work/pause" "$src"
	strip "$work/pause"
	tar --numeric-owner --owner=0 --group=0 -C "$work" -cf "$out.tmp" pause
	mv "$out.tmp" "$out"
	rm -rf "$work"
	info "pause layer: $out"
}

build_nginx_layer
build_pause_layer

PUSH_LOG=$LOGS/images-push.log
step "pushing images to the registry at $REGISTRY (log: $PUSH_LOG)"
: >"$PUSH_LOG"
push() { # push REPO TAG LAYER [crane mutate args...]
	local repo=$1 tag=$2 layer=$3; shift 3
	local ref=$REGISTRY/$repo:$tag
	{ $CRANE append -f "$layer" -t "$ref" && $CRANE mutate "$ref" --set-platform linux/amd64 "$@" -t "$ref"; } \
		>>"$PUSH_LOG" 2>&1 || { tail -5 "$PUSH_LOG" >&2; die "pushing $ref failed; log: $PUSH_LOG"; }
	info "$ref -> $($CRANE digest "$ref" 2>>"$PUSH_LOG")"
}
push library/nginx 1.22.1 "$IMAGES_DIR/nginx-layer.tar" \
	--cmd 'nginx,-g,daemon off;' --exposed-ports 80 -e PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$CRANE tag "$REGISTRY/library/nginx:1.22.1" latest >>"$PUSH_LOG" 2>&1
info "$REGISTRY/library/nginx:latest -> 1.22.1"
push pause 3.10.1 "$IMAGES_DIR/pause-layer.tar" --entrypoint /pause
