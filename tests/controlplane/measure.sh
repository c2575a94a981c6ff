#!/usr/bin/env bash
# Measures `kube-sentinel testenv`: time from launch to a written kubeconfig (the API server
# answers /readyz and the controller manager has created the default ServiceAccount), and the
# resident memory of the whole process tree once ready.
#
#   tests/controlplane/measure.sh [RUNS]     (default 5; builds the binary in release mode)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
runs=${1:-5}
cargo build --release --quiet
bin=target/release/kube-sentinel
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tests/controlplane/build.sh >/dev/null
rss_tree() { # total VmRSS (KiB) of $1 and its children
  local total=0 p
  for p in $1 $(cat /proc/$1/task/*/children 2>/dev/null); do
    total=$(( total + $(awk '/VmRSS/{print $2}' /proc/$p/status 2>/dev/null || echo 0) ))
  done
  echo $total
}
times=(); mems=()
for i in $(seq "$runs"); do
  kc=$tmp/kc-$i
  start=$(date +%s%N)
  # Hold stdin open on a fifo so --exit-on-stdin-eof stops it when we close it.
  mkfifo "$tmp/in-$i"
  "$bin" testenv --exit-on-stdin-eof --quiet --kubeconfig "$kc" <"$tmp/in-$i" 2>"$tmp/log-$i" &
  pid=$!
  exec 3>"$tmp/in-$i"
  while [ ! -s "$kc" ]; do
    kill -0 $pid 2>/dev/null || { cat "$tmp/log-$i" >&2; exit 1; }
    sleep 0.05
  done
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  sleep 5 # let the controllers settle before reading memory
  kib=$(rss_tree $pid)
  times+=("$ms"); mems+=("$kib")
  echo "run $i: ready in ${ms} ms, RSS of the tree $(( kib / 1024 )) MiB"
  exec 3>&-
  wait $pid
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo "median ready time: $(median "${times[@]}") ms over $runs starts"
echo "median RSS: $(( $(median "${mems[@]}") / 1024 )) MiB (etcd + kube-apiserver + kube-controller-manager + launcher)"
