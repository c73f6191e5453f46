#!/usr/bin/env bash
# Renders every kustomization under deploy/kubernetes with kubectl's kustomize (offline) and
# validates each rendered object without an API server (deploy/kubernetes/check: the Kubernetes
# schemas of kubernetes-models 4.5.1, unknown fields, and the arrangement's own rules).
# Usage: manifests_test.sh   (needs kubectl >= 1.27 and node + npm; installs the checker's pinned
# packages with `npm ci` from the npm registry)
set -euo pipefail
cd "$(dirname "$0")/../../deploy/kubernetes"
if ! command -v kubectl >/dev/null; then
  echo "FAIL: kubectl is missing. Debian's package (1.20) is too old for these manifests; install"
  echo "      kubectl >= 1.27 from the Kubernetes project (these machines have v1.32 preinstalled)."
  exit 1
fi
kubectl_minor=$(kubectl version --client -o json | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -1)
[ "${kubectl_minor:-0}" -ge 27 ] || { echo "FAIL: kubectl 1.${kubectl_minor} is too old (>= 1.27)"; exit 1; }
command -v npm >/dev/null || { echo "FAIL: node and npm are missing (apt-get install nodejs npm)"; exit 1; }
(cd check && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

status=0
for dir in base overlays/*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  if ! rendered=$(kubectl kustomize "$dir" 2>&1); then
    echo "FAIL: kubectl kustomize $dir: $rendered"
    status=1
    continue
  fi
  node check/check-rendered.mjs "$name" <<<"$rendered" || status=1
done
exit $status
