#!/usr/bin/env bash
# Builds the go-control-plane peer into a cache directory outside the repository.
#   benchmarks/goserver/build.sh            -> prints the binary's path
# Needs Go (PATH or /usr/local/go/bin) and the Go module proxy; versions are pinned by
# go.mod / go.sum next to this script.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${CONTROLPLANE_BENCH_CACHE:-$HOME/.cache/controlplane/bench}"
mkdir -p "$out"
export PATH="$PATH:/usr/local/go/bin"
cd "$here"
go build -trimpath -o "$out/goserver" . >&2
echo "$out/goserver"
