#!/usr/bin/env bash
# Install what the node tier (tests/node) needs beside the Go binaries of hack/testenv.sh: containerd and runc
# (run pods under the kubelet), podman and buildah (build images without a registry), debootstrap (a Debian 12
# base image with Python 3.11). Where this cannot run (not root, no apt), the node tier is skipped with a
# message naming this script.
set -euo pipefail
NEED=(containerd runc podman buildah debootstrap)
missing=()
for tool in containerd runc podman buildah debootstrap; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -eq 0 ]; then echo "node-deps: ${NEED[*]} present"; exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "node-deps: missing ${missing[*]}; run 'sudo hack/node-deps.sh' on Debian/Ubuntu (the node tier is skipped meanwhile)" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends containerd runc podman buildah debootstrap containernetworking-plugins >/dev/null
echo "node-deps: installed ${missing[*]}"
