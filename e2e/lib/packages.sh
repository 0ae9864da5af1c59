# Installs the rig's peers from Debian's packages, only what is missing.
# Source after common.sh.
# shellcheck shell=bash

# Debian packages the rig and the end-to-end suite use.
RIG_PACKAGES=(
  redis-server redis-tools pebble nginx haproxy tinyproxy microsocks
  dante-server squid iperf3 wrk hyperfine curl openssl socat python3
  nghttp2-client
  ca-certificates
  # reverse-proxy tests: a real WebSocket client and gRPC client and server
  python3-websockets python3-grpcio
  # OAuth tests (e2e/oauth/setup): the browser login, a throwaway NSS
  # database to trust the test CA in it, and the venv for the mcp SDK
  chromium libnss3-tools python3-venv
)

pkg_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

missing_packages() {
  local p
  for p in "${RIG_PACKAGES[@]}"; do pkg_installed "$p" || echo "$p"; done
}

# install_packages: apt-get install of the missing packages, with a
# policy-rc.d that keeps their services from starting (the rig starts what
# it needs itself, on its own ports).
install_packages() {
  local missing added_policy=""
  mapfile -t missing < <(missing_packages)
  if [ "${#missing[@]}" -eq 0 ]; then
    log "Debian packages present"
    return 0
  fi
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
  log "installing from Debian: ${missing[*]}"
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  # Refresh the package lists only when there are none (fresh containers).
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  fi
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    --no-install-recommends "${missing[@]}" </dev/null || rc=$?
  if [ "$rc" -ne 0 ]; then
    # Stale package lists name files the mirror no longer has: refresh, retry.
    log "apt-get install failed (rc=$rc); refreshing package lists and retrying"
    rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends "${missing[@]}" </dev/null || rc=$?
  fi
  if [ -n "$added_policy" ]; then as_root rm -f /usr/sbin/policy-rc.d; fi
  [ "$rc" -eq 0 ] || die "apt-get install failed (rc=$rc)"
}
