#!/usr/bin/env bash
# Deletes the kind cluster made by e2e/kind/up.sh and its kubeconfig.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${KIND_CLUSTER:-postern}
KIND_DIR="$REPO_ROOT/target/kind"
PATH="$PATH:$KIND_DIR/bin"

command -v kind >/dev/null || { echo "kind not found; nothing to delete" >&2; exit 0; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "no kind cluster named $CLUSTER" >&2
fi
rm -f "$KIND_DIR/kubeconfig"
