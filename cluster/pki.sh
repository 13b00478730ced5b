#!/usr/bin/env bash
# Certificates and kubeconfigs laid out as kubeadm lays them out (/etc/kubernetes/pki, etcd/,
# *.conf), written under $STATE/pki and $STATE/nodes/NODE/etc-kubernetes, which the node
# mount namespaces bind over /etc/kubernetes. Made with openssl; kept across `down` only if
# KTRAIL_KEEP_PKI=1 (by default `down` removes everything `up` made).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PKI=$STATE/pki
mkdir -p "$PKI/etcd"
cd "$PKI"
DAYS=3650

ca() { # ca NAME CN
	[[ -f $1.crt ]] && return
	openssl genrsa -out "$1.key" 2048 2>/dev/null
	openssl req -x509 -new -nodes -key "$1.key" -sha256 -days $DAYS -subj "/CN=$2" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
		-out "$1.crt" 2>/dev/null
}

# cert NAME CA SUBJ USAGE [SANS]  (USAGE: client | server | both)
cert() {
	local name=$1 ca=$2 subj=$3 usage=$4 sans=${5:-}
	[[ -f $name.crt ]] && return
	local eku
	case $usage in client) eku=clientAuth ;; server) eku=serverAuth ;; both) eku=serverAuth,clientAuth ;; esac
	local ext; ext=$(mktemp)
	{
		echo "basicConstraints=critical,CA:FALSE"
		echo "keyUsage=critical,digitalSignature,keyEncipherment"
		echo "extendedKeyUsage=$eku"
		[[ -n $sans ]] && echo "subjectAltName=$sans"
	} >"$ext"
	openssl genrsa -out "$name.key" 2048 2>/dev/null
	openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
	openssl x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days $DAYS -sha256 \
		-extfile "$ext" -out "$name.crt" 2>/dev/null
	rm -f "$name.csr" "$ext"
}

step "certificates (kubeadm layout) in $PKI"
ca ca kubernetes
ca front-proxy-ca front-proxy-ca
ca etcd/ca etcd-ca
cert apiserver ca "/CN=kube-apiserver" server \
	"DNS:k8s-control,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1,IP:$CONTROL_IP,IP:127.0.0.1"
cert apiserver-kubelet-client ca "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client" client
cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" client
cert apiserver-etcd-client etcd/ca "/CN=kube-apiserver-etcd-client" client
cert etcd/server etcd/ca "/CN=k8s-control" both "DNS:k8s-control,DNS:localhost,IP:$CONTROL_IP,IP:127.0.0.1"
cert etcd/peer etcd/ca "/CN=k8s-control" both "DNS:k8s-control,DNS:localhost,IP:$CONTROL_IP,IP:127.0.0.1"
cert etcd/healthcheck-client etcd/ca "/CN=kube-etcd-healthcheck-client" client
[[ -f sa.key ]] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
# Client certificates for the kubeconfigs (same subjects as kubeadm's).
cert admin ca "/O=kubeadm:cluster-admins/CN=kubernetes-admin" client
cert super-admin ca "/O=system:masters/CN=kubernetes-super-admin" client
cert controller-manager ca "/CN=system:kube-controller-manager" client
cert scheduler ca "/CN=system:kube-scheduler" client
cert kube-proxy ca "/CN=system:kube-proxy" client
for n in "${NODES[@]}"; do
	cert "kubelet-$n" ca "/O=system:nodes/CN=system:node:$n" client
done
info "CA, apiserver, etcd, front-proxy, service-account keys, client certs: done"

# kubeconfig OUT CERTNAME USER SERVER CERTDIR  (CERTDIR: where the certs are, as seen by the user)
kubeconfig() {
	local out=$1 name=$2 user=$3 server=$4 dir=$5
	cat >"$out" <<EOC
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority: $dir/ca.crt
    server: $server
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: $user
  name: $user@kubernetes
current-context: $user@kubernetes
users:
- name: $user
  user:
    client-certificate: $dir/$name.crt
    client-key: $dir/$name.key
EOC
}

# The host's admin kubeconfig (cargo xtask cluster kubeconfig prints its path).
kubeconfig "$STATE/admin.conf" admin kubernetes-admin "https://$CONTROL_IP:6443" "$PKI"
kubeconfig "$STATE/super-admin.conf" super-admin kubernetes-super-admin "https://$CONTROL_IP:6443" "$PKI"

# Each node's /etc/kubernetes (bound there inside the node's mount namespace).
for n in "${NODES[@]}"; do
	etc=$STATE/nodes/$n/etc-kubernetes
	mkdir -p "$etc/pki"
	cp ca.crt "$etc/pki/"
	cp "kubelet-$n.crt" "kubelet-$n.key" kube-proxy.crt kube-proxy.key "$etc/pki/"
	kubeconfig "$etc/kubelet.conf" "kubelet-$n" "system:node:$n" "https://$CONTROL_IP:6443" /etc/kubernetes/pki
	kubeconfig "$etc/kube-proxy.conf" kube-proxy "system:kube-proxy" "https://$CONTROL_IP:6443" /etc/kubernetes/pki
done
etc=$STATE/nodes/k8s-control/etc-kubernetes
cp -r "$PKI"/. "$etc/pki/"
kubeconfig "$etc/admin.conf" admin kubernetes-admin "https://$CONTROL_IP:6443" /etc/kubernetes/pki
kubeconfig "$etc/super-admin.conf" super-admin kubernetes-super-admin "https://$CONTROL_IP:6443" /etc/kubernetes/pki
kubeconfig "$etc/controller-manager.conf" controller-manager "system:kube-controller-manager" "https://$CONTROL_IP:6443" /etc/kubernetes/pki
kubeconfig "$etc/scheduler.conf" scheduler "system:kube-scheduler" "https://$CONTROL_IP:6443" /etc/kubernetes/pki
info "kubeconfigs: $STATE/admin.conf (host), /etc/kubernetes/*.conf (per node: $STATE/nodes/NODE/etc-kubernetes)"
