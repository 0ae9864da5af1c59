# Builds the control-plane binaries no package ships (etcd, kube-apiserver,
# kube-controller-manager, kubectl, helm) from the Go modules under
# e2e/controlplane, and caches them outside the work tree.
# Needs CONTROLPLANE_DIR. Source after common.sh.
# shellcheck shell=bash

RIG_BINARIES=(etcd kube-apiserver kube-controller-manager kubectl helm)

# module_version MODFILE MODULE: the version MODFILE requires of MODULE.
module_version() {
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$1"
}

kube_version() { module_version "$CONTROLPLANE_DIR/kube/go.mod" k8s.io/kubernetes; }
helm_version() { module_version "$CONTROLPLANE_DIR/helm/go.mod" helm.sh/helm/v3; }

# cache_key: hash of every go.mod, go.sum and main.go of the control-plane
# modules and of this file (the build flags), so a version bump, a changed
# main or changed flags rebuild, and nothing else does.
cache_key() {
  local files
  files=$(cd "$CONTROLPLANE_DIR" && find . -name go.mod -o -name go.sum -o -name '*.go' | LC_ALL=C sort)
  # shellcheck disable=SC2086
  (cd "$CONTROLPLANE_DIR" && hash_files $files ../lib/build.sh)
}

rig_cache_root() { echo "${POSTERN_RIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/postern-rig}"; }
rig_bin_dir() { echo "$(rig_cache_root)/$(cache_key)/bin"; }

# binaries_present: true when every binary is in the cache for this key.
binaries_present() {
  local dir b
  dir=$(rig_bin_dir)
  for b in "${RIG_BINARIES[@]}"; do [ -x "$dir/$b" ] || return 1; done
}

# kube_ldflags: stamps the Kubernetes version into component-base and
# client-go, or the server says v0.0.0-master.
kube_ldflags() {
  local v major minor pkg flags=""
  v=$(kube_version)
  major=${v#v}; major=${major%%.*}
  minor=${v#v*.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean"
  done
  echo "-s -w$flags"
}

# go_build DIR ARGS...: one nice'd, static, reproducible go build in DIR.
go_build() {
  local dir=$1; shift
  log "  (cd ${dir#"$REPO_ROOT"/} && go build -trimpath -buildvcs=false $(printf '%q ' "$@"))"
  # -buildvcs=false: the binaries need no VCS stamp, and a checkout without
  # commits (or without git) would otherwise fail the build.
  (cd "$dir" && CGO_ENABLED=0 GOTOOLCHAIN=local nice -n 10 go build -trimpath -buildvcs=false "$@")
}

# build_binaries: builds into a temporary directory next to the cache entry
# and renames it into place, so an interrupted build never looks complete.
build_binaries() {
  local dest tmp kv hv start=$SECONDS
  command -v go >/dev/null || die "go is not installed (needed to build the control plane)"
  dest=$(rig_bin_dir)
  if binaries_present; then
    log "binaries up to date in $dest"
    return 0
  fi
  kv=$(kube_version); hv=$(helm_version)
  log "building Kubernetes $kv, etcd and helm $hv with $(go env GOVERSION) into $dest"
  mkdir -p "$(dirname "$dest")"
  tmp=$(mktemp -d "$(dirname "$dest")/bin.tmp.XXXXXX")
  go_build "$CONTROLPLANE_DIR/kube" -ldflags "$(kube_ldflags)" -o "$tmp/" \
    ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kubectl
  go_build "$CONTROLPLANE_DIR/etcd" -ldflags "-s -w" -o "$tmp/etcd" ./cmd/etcd
  go_build "$CONTROLPLANE_DIR/helm" \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$hv -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
  chmod 755 "$tmp"
  rm -rf "$dest"
  mv "$tmp" "$dest"
  log "built ${RIG_BINARIES[*]} in $((SECONDS - start))s"
}
