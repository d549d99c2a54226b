#!/usr/bin/env bash
# Idempotent set-up for ctrexec on Debian 12, as root: installs what is missing (Debian packages, npm
# dependencies), builds, starts containerd when nothing answers on its socket, and builds the default rootfs.
# Safe to run any number of times; does nothing that is already done. Used by the README and by .ci/run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
state="${CTREXEC_ROOT:-/var/lib/ctrexec}"
address="${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}"
address="${address#unix://}"
say() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "must run as root (containerd, runc and mounts need it)"
  exit 1
fi

# 1. Debian packages.
# docker-registry, skopeo, zstd, openssl and apache2-utils (htpasswd) serve the image pull tests' local registry;
# rootlesskit, slirp4netns and uidmap the rootless pass (scripts/setup-rootless.sh installs them for a user too).
packages=(containerd runc busybox-static containernetworking-plugins iproute2 python3 make g++ tmux
  docker-registry skopeo zstd openssl apache2-utils rootlesskit slirp4netns uidmap)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# 2. npm dependencies, when package-lock.json changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

# 3. Build (incremental: the native addon only when its source changed, tsc incrementally).
node scripts/build.mjs

# 4. containerd: start it only when nothing answers on the socket, fully detached from our stdio.
mkdir -p "$state"
chmod 0711 "$state"
answers() { timeout 5 ctr --address "$address" version >/dev/null 2>&1; }
if ! answers; then
  if [ -S "$address" ] && pgrep -x containerd >/dev/null; then
    say "containerd is running but does not answer on $address yet; waiting"
  else
    say "starting containerd on $address (log: $state/containerd.log)"
    args=()
    [ "$address" != /run/containerd/containerd.sock ] && args+=(--address "$address")
    setsid -f containerd "${args[@]}" </dev/null >>"$state/containerd.log" 2>&1
  fi
  for _ in $(seq 1 100); do answers && break; sleep 0.2; done
  if ! answers; then
    say "containerd did not answer on $address within 20 s; see $state/containerd.log"
    tail -n 20 "$state/containerd.log" >&2 || true
    exit 1
  fi
fi

# 5. The default bridge network's CNI config (bridge ctrexec0, masquerade on), unless one exists: an existing
#    /etc/cni/net.d/ctrexec.conflist is the administrator's and is never touched. CTREXEC_SUBNET sets the subnet.
if [ -x /usr/lib/cni/bridge ] && [ ! -e /etc/cni/net.d/ctrexec.conflist ]; then
  mkdir -p /etc/cni/net.d
  node --input-type=module -e "
    const { defaultBridgeConfig } = await import('./dist/src/network/bridge.js');
    const conf = defaultBridgeConfig(process.argv[1] ? { subnet: process.argv[1] } : {});
    console.log(JSON.stringify(conf, null, 2));
  " "${CTREXEC_SUBNET:-}" > /etc/cni/net.d/ctrexec.conflist.tmp
  mv /etc/cni/net.d/ctrexec.conflist.tmp /etc/cni/net.d/ctrexec.conflist
  say "wrote the default bridge network config /etc/cni/net.d/ctrexec.conflist"
fi

# 6. The built-in default rootfs.
node --input-type=module -e "
  const { ensureDefaultRootfs } = await import('./dist/src/rootfs/default-rootfs.js');
  await ensureDefaultRootfs(process.argv[1]);
" "$state"
