#!/usr/bin/env bash
# Build the test Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), a node
# (kubelet), kubectl, helm and promtool from the Go module proxy, cached under .cache/testenv/<versions>/bin.
# Idempotent: a warm cache is a no-op.
# See ../shared/reference/kube-testenv.md for why a wrapper module is needed.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.34.4}"
HELM_VERSION="${HELM_VERSION:-3.22.0}"
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-0.316.0}"  # Go module version of Prometheus (its promtool checks the chart's alerts)
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${AMLWIRE_TESTENV_CACHE:-$ROOT/.cache/testenv}"
BIN="$CACHE/k8s-v$K8S_VERSION-helm-v$HELM_VERSION/bin"
K8S_MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"

have_all() {
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl helm promtool; do [ -x "$BIN/$b" ] || return 1; done
}

if [ "${1:-}" = "--print-bin" ]; then echo "$BIN"; exit 0; fi
if have_all; then echo "testenv: cached in $BIN"; exit 0; fi

if ! command -v go >/dev/null 2>&1; then
  cat >&2 <<MSG
testenv: the Go toolchain is missing, so etcd, kube-apiserver and helm cannot be built.
Install Go >= 1.24 (https://go.dev/dl/) and put 'go' on PATH, then re-run 'make testenv'.
MSG
  exit 1
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOMODCACHE="${GOMODCACHE:-$CACHE/gomod}" GOCACHE="${GOCACHE:-$CACHE/gocache}"
WORK="$CACHE/build-k8s-v$K8S_VERSION"
mkdir -p "$BIN" "$WORK"
cd "$WORK"

started=$(date +%s)
kubernetes_module() {  # a wrapper module that can build k8s.io/kubernetes' commands (staging replaced)
  [ -f go.sum ] && grep -q "k8s.io/kubernetes v$K8S_VERSION" go.mod && return 0
  printf 'module local/kbuild\n\ngo 1.24.0\n\ngodebug default=go1.24\n' > go.mod
  GOMOD=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$GOMOD" \
    | awk -v v="v0.$K8S_MINOR.${K8S_VERSION##*.}" '{print "replace "$1" => "$1" "v}' >> go.mod
  go get "k8s.io/kubernetes@v$K8S_VERSION"
}
LD="-s -w -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$K8S_MINOR"

if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/etcd" ]; then
  kubernetes_module
  echo "testenv: building kube-apiserver v$K8S_VERSION (cold: 15-25 min on 2 cores)"
  go build -pgo=off -trimpath -ldflags "$LD" -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  echo "testenv: building etcd at the version kubernetes pins"
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
fi

if [ ! -x "$BIN/kube-controller-manager" ]; then
  # namespace deletion, garbage collection, service-account token and root CA publishing, as in a cluster
  echo "testenv: building kube-controller-manager v$K8S_VERSION"
  kubernetes_module
  go build -pgo=off -trimpath -ldflags "$LD" -o "$BIN/kube-controller-manager" k8s.io/kubernetes/cmd/kube-controller-manager
fi

if [ ! -x "$BIN/kube-scheduler" ]; then
  echo "testenv: building kube-scheduler v$K8S_VERSION"
  kubernetes_module
  go build -pgo=off -trimpath -ldflags "$LD" -o "$BIN/kube-scheduler" k8s.io/kubernetes/cmd/kube-scheduler
fi

if [ ! -x "$BIN/kubelet" ]; then
  # the node tier (tests/node): pods run under a real kubelet with containerd (hack/node-deps.sh)
  echo "testenv: building kubelet v$K8S_VERSION"
  kubernetes_module
  go build -pgo=off -trimpath -ldflags "$LD" -o "$BIN/kubelet" k8s.io/kubernetes/cmd/kubelet
fi

if [ ! -x "$BIN/kubectl" ]; then
  # the tests run `kubectl get/describe/explain/apply --server-side` and the plugin as a user would
  echo "testenv: building kubectl v$K8S_VERSION"
  kubernetes_module
  go build -pgo=off -trimpath -ldflags "$LD" -o "$BIN/kubectl" k8s.io/kubernetes/cmd/kubectl
fi

if [ ! -x "$BIN/helm" ]; then
  echo "testenv: building helm v$HELM_VERSION"
  HLD="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  for pkg in pkg/chartutil pkg/lint/rules; do
    HLD="$HLD -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$K8S_MINOR"
  done
  GOBIN="$BIN" go install -trimpath -ldflags "$HLD" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
fi

if [ ! -x "$BIN/promtool" ]; then
  echo "testenv: building promtool (Prometheus module v$PROMETHEUS_VERSION)"
  PWORK="$CACHE/build-prometheus-v$PROMETHEUS_VERSION"
  mkdir -p "$PWORK"
  (
    cd "$PWORK"
    [ -f go.mod ] || printf 'module local/promtool\n\ngo 1.24.0\n' > go.mod
    go get "github.com/prometheus/prometheus@v$PROMETHEUS_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$BIN/promtool" github.com/prometheus/prometheus/cmd/promtool
  )
fi

have_all
echo "testenv: built in $(( $(date +%s) - started ))s into $BIN"
