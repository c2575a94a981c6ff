#!/usr/bin/env bash
# Builds toxiproxy's server from its upstream module (github.com/Shopify/toxiproxy/v2, pinned in
# toxiproxy/go.mod) into a cache keyed by version and go.sum, and prints the binary's path. The
# fault-injection suite (`kube-sentinel faults`) puts it between each program and the API
# server to add latency, limit bandwidth, reset connections, cut the path and leave
# connections half-open.
#
#   tests/controlplane/build-toxiproxy.sh          # build if needed, print the path
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
command -v go >/dev/null || { echo "build-toxiproxy.sh: the Go toolchain is required" >&2; exit 1; }

version=$(awk '{ for (i = 1; i < NF; i++) if ($i == "github.com/Shopify/toxiproxy/v2") { print $(i + 1); exit } }' "$here/toxiproxy/go.mod")
[ -n "$version" ] || { echo "build-toxiproxy.sh: cannot read the pinned toxiproxy version" >&2; exit 1; }
go_version=$(go env GOVERSION)
hash=$(cat "$here"/toxiproxy/go.mod "$here"/toxiproxy/go.sum "$here"/toxiproxy/tools.go | sha256sum | cut -c1-12)
root=${KUBE_SENTINEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-sentinel}
out="$root/toxiproxy/$version-$go_version-$hash"

if [ -x "$out/toxiproxy-server" ]; then
  echo "$out/toxiproxy-server"; exit 0
fi

tmp="$out.partial.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
start=$(date +%s)
echo "build-toxiproxy.sh: building toxiproxy $version with $go_version" >&2
(cd "$here/toxiproxy" && go build -ldflags "-s -w" -o "$tmp/toxiproxy-server" github.com/Shopify/toxiproxy/v2/cmd/server)
echo "build-toxiproxy.sh: built in $(( $(date +%s) - start )) s" >&2
rm -rf "$out" && mv "$tmp" "$out"
echo "$out/toxiproxy-server"
