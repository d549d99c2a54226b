#!/usr/bin/env bash
# Builds the benchmark's anchor, containerd's own Go client on the same workloads (../shared/bench/go-anchor),
# at /tmp/go-anchor, unless it is there already. Debian packages the client sources at the version of its
# containerd (1.6.20 on Debian 12), so the build needs no module download. Run by `npm run bench`; the bench
# runs without the Go column when this fails.
set -euo pipefail
out="${CTREXEC_GO_ANCHOR:-/tmp/go-anchor}"
[ -x "$out" ] && exit 0
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared/bench/go-anchor/main.go"
if [ ! -f "$src" ]; then
  echo "build-go-anchor: $src not found; the bench runs without the Go client" >&2
  exit 0
fi
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/containerd/containerd ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go golang-github-containerd-containerd-dev >/dev/null
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$src" "$work/"
(cd "$work" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/cache" go build -o "$out.tmp" . && mv "$out.tmp" "$out")
echo "build-go-anchor: built $out" >&2
