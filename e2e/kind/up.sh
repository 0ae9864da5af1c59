#!/usr/bin/env bash
# Brings up a kind cluster "postern" with Postern installed from the local
# chart and a locally built image. Needs Docker. Prints the kubeconfig path
# on stdout (everything else goes to stderr), so:
#   export KUBECONFIG=$(e2e/kind/up.sh)
#
# Environment:
#   KIND_CLUSTER     cluster name (default postern)
#   KIND_NODE_IMAGE  node image (default: Kubernetes 1.34 image of kind v0.33.0,
#                    the Kubernetes line e2e/controlplane builds for the rig)
#   KIND_VERSION     kind to `go install` when kind is not on PATH (v0.33.0)
#   IMAGE            image to build and load (default postern:dev)
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${KIND_CLUSTER:-postern}
KIND_VERSION=${KIND_VERSION:-v0.33.0}
# From the release notes of kind v0.33.0; the digest is what ties an image to
# the kind release that built it.
DEFAULT_NODE_IMAGE="kindest/node:v1.34.11@sha256:44e222ee2132dab25ff87301682f89eb82c7880ea3a1bf543bfe9708fd08d67d"
NODE_IMAGE=${KIND_NODE_IMAGE:-$DEFAULT_NODE_IMAGE}
IMAGE=${IMAGE:-postern:dev}
IMAGE_REPO=${IMAGE%:*}
IMAGE_TAG=${IMAGE##*:}
KIND_DIR="$REPO_ROOT/target/kind"
KUBECONFIG_FILE="$KIND_DIR/kubeconfig"

# shellcheck source=e2e/lib/common.sh
. "$REPO_ROOT/e2e/lib/common.sh"

# need TOOL: finds TOOL on PATH, else in the rig's binary cache
# (e2e/rig build makes kubectl and helm), else dies.
need() {
  local tool=$1 rig_bin
  if command -v "$tool" >/dev/null; then return 0; fi
  rig_bin=$("$REPO_ROOT/e2e/rig" bin-dir 2>/dev/null || true)
  if [ -n "$rig_bin" ] && [ -x "$rig_bin/$tool" ]; then
    PATH="$rig_bin:$PATH"
    return 0
  fi
  die "$tool not found on PATH (kubectl and helm: run e2e/rig build)"
}

# ensure_kind: kind from PATH, else `go install` from the Go module proxy
# into target/kind/bin.
ensure_kind() {
  if command -v kind >/dev/null; then
    if [ -z "${KIND_NODE_IMAGE:-}" ] && ! kind version | grep -q "kind $KIND_VERSION "; then
      log "warning: $(kind version) is not $KIND_VERSION; the default node image is" \
        "built for $KIND_VERSION (set KIND_NODE_IMAGE to one listed for your kind release)"
    fi
    return 0
  fi
  command -v go >/dev/null || die "kind not found and no go to install it"
  log "installing kind $KIND_VERSION with go install"
  mkdir -p "$KIND_DIR/bin"
  GOBIN="$KIND_DIR/bin" CGO_ENABLED=0 go install "sigs.k8s.io/kind@$KIND_VERSION" >&2
  PATH="$KIND_DIR/bin:$PATH"
}

create_cluster() {
  mkdir -p "$KIND_DIR"
  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "kind cluster $CLUSTER exists; reusing it"
    kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" >&2
  else
    log "creating kind cluster $CLUSTER ($NODE_IMAGE)"
    kind create cluster --name "$CLUSTER" --image "$NODE_IMAGE" \
      --kubeconfig "$KUBECONFIG_FILE" --wait 180s >&2
  fi
}

build_and_load_image() {
  [ -f "$REPO_ROOT/Dockerfile" ] || die "no Dockerfile at the repository root"
  log "docker build -t $IMAGE $REPO_ROOT"
  docker build -t "$IMAGE" "$REPO_ROOT" >&2
  log "kind load docker-image $IMAGE --name $CLUSTER"
  kind load docker-image "$IMAGE" --name "$CLUSTER" >&2
}

install_chart() {
  [ -f "$REPO_ROOT/charts/postern/Chart.yaml" ] || die "no chart at charts/postern"
  log "helm install postern charts/postern ($IMAGE)"
  # upgrade --install: the same as install on a new cluster, and re-running
  # the script on an existing one upgrades instead of failing.
  KUBECONFIG="$KUBECONFIG_FILE" helm upgrade --install postern "$REPO_ROOT/charts/postern" \
    --set image.repository="$IMAGE_REPO" --set image.tag="$IMAGE_TAG" \
    --set image.pullPolicy=IfNotPresent \
    --wait --timeout 5m >&2
}

main() {
  need docker
  need kubectl
  need helm
  docker info >/dev/null 2>&1 || die "docker is not running (or not reachable)"
  ensure_kind
  create_cluster
  build_and_load_image
  install_chart
  KUBECONFIG="$KUBECONFIG_FILE" kubectl get pods -A -o wide >&2
  echo "$KUBECONFIG_FILE"
}

main "$@"
