#!/usr/bin/env bash
# Certificates and kubeconfigs of the local cluster, made with openssl: one CA for the cluster, one for the
# front proxy (the apiserver's aggregation layer, which metrics-server needs), a service-account key pair, and a
# client or serving certificate per component. Kept while their files exist, so `up` after `up` reuses them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=scripts/cluster/config.sh
source "$here/config.sh"
pki="$STATE_DIR/pki"
mkdir -p "$pki"
cd "$pki"

ca() { # ca <name> <CN>
  [[ -f "$1.crt" ]] && return
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.crt" -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# cert <name> <ca> <subject> <extendedKeyUsage> [subjectAltName]
cert() {
  local name="$1" issuer="$2" subject="$3" usage="$4" san="${5:-}"
  [[ -f "$name.crt" ]] && return
  local ext="$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } >"$ext"
  openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA "$issuer.crt" -CAkey "$issuer.key" -CAcreateserial -out "$name.crt" \
    -days 3650 -extfile "$ext" 2>/dev/null
  rm -f "$name.csr" "$ext"
}

ca ca mnist-local-ca
ca front-proxy-ca mnist-local-front-proxy-ca
[[ -f sa.key ]] || { openssl genrsa -out sa.key 2048 2>/dev/null && openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }

api_sans="IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default"
api_sans+=",DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
cert apiserver ca "/CN=kube-apiserver" serverAuth "$api_sans"
cert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
cert admin ca "/O=system:masters/CN=mnist-local-admin" clientAuth
cert controller-manager ca "/CN=system:kube-controller-manager" clientAuth
cert scheduler ca "/CN=system:kube-scheduler" clientAuth
cert kube-proxy ca "/CN=system:kube-proxy" clientAuth
cert kubelet-client ca "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
cert kubelet-serving ca "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
chmod 600 ./*.key

kubectl="$K8S_BIN/kubectl"
kubeconfig() { # kubeconfig <file> <user cert name>
  local file="$STATE_DIR/$1.kubeconfig"
  [[ -f "$file" ]] && return
  "$kubectl" config set-cluster mnist-local --kubeconfig "$file" --server "https://$NODE_IP:$API_PORT" \
    --certificate-authority ca.crt --embed-certs >/dev/null
  "$kubectl" config set-credentials "$2" --kubeconfig "$file" --client-certificate "$2.crt" \
    --client-key "$2.key" --embed-certs >/dev/null
  "$kubectl" config set-context mnist-local --kubeconfig "$file" --cluster mnist-local --user "$2" >/dev/null
  "$kubectl" config use-context mnist-local --kubeconfig "$file" >/dev/null
}
for user in admin controller-manager scheduler kube-proxy; do kubeconfig "$user" "$user"; done
kubeconfig kubelet kubelet-client
