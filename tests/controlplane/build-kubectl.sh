#!/usr/bin/env bash
# Builds kubectl from its upstream module (k8s.io/kubectl, pinned in kubectl/go.mod, the same
# Kubernetes release as the control plane) into a cache keyed by version and go.sum, and
# prints the binary's path. The tests use it for what only kubectl does: `kubectl kustomize`
# renders deploy/, `kubectl auth can-i --list` shows what a ServiceAccount may do.
#
#   tests/controlplane/build-kubectl.sh          # build if needed, print the path
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
command -v go >/dev/null || { echo "build-kubectl.sh: the Go toolchain is required" >&2; exit 1; }

module_version=$(awk '$1=="k8s.io/kubectl"{print $2; exit}' "$here/kubectl/go.mod")
[ -n "$module_version" ] || { echo "build-kubectl.sh: cannot read the pinned k8s.io/kubectl version" >&2; exit 1; }
# k8s.io/kubectl v0.37.2 is Kubernetes v1.37.2.
version="v1.${module_version#v0.}"
go_version=$(go env GOVERSION)
hash=$(cat "$here"/kubectl/go.mod "$here"/kubectl/go.sum "$here"/kubectl/main.go | sha256sum | cut -c1-12)
root=${KUBE_SENTINEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-sentinel}
out="$root/kubectl/$version-$go_version-$hash"

if [ -x "$out/kubectl" ]; then
  echo "$out/kubectl"; exit 0
fi

tmp="$out.partial.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
minor=$(echo "$version" | cut -d. -f2)
ld="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
start=$(date +%s)
echo "build-kubectl.sh: building kubectl $version with $go_version" >&2
(cd "$here/kubectl" && go build -ldflags "$ld" -o "$tmp/kubectl" .)
echo "build-kubectl.sh: built in $(( $(date +%s) - start )) s" >&2
rm -rf "$out" && mv "$tmp" "$out"
echo "$out/kubectl"
