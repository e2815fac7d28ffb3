#!/usr/bin/env bash
# Build the MinIO server binary from its Go module (no prebuilt download is possible here).
#
#   infra/minio/build.sh            build only when the binary is missing
#   infra/minio/build.sh --force    rebuild
#
# The binary lands in infra/.build/bin/ (git-ignored). The first build compiles hundreds of
# modules (~10-15 min on 2 cores, ~1 GB of Go caches); it runs at the lowest CPU priority with
# one compile job at a time so it does not starve other work on the machine. Later builds come
# from the Go build cache and take seconds.
#
# MinIO has no semver tags on its module: the pin is a pseudo-version of its default branch.
set -euo pipefail

MINIO_MODULE="github.com/minio/minio"
MINIO_VERSION="${QRSDP_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin_dir="${QRSDP_BIN_DIR:-$root/infra/.build/bin}"
binary="$bin_dir/minio"

force=0
[[ "${1:-}" == "--force" ]] && force=1

if [[ -x "$binary" && $force -eq 0 ]]; then
  echo "minio already built: $binary"
  exit 0
fi

command -v go >/dev/null 2>&1 || { echo "error: 'go' not found on PATH (needs Go >= 1.24)" >&2; exit 1; }

mkdir -p "$bin_dir"
echo "building $MINIO_MODULE@$MINIO_VERSION into $bin_dir (niced, 1 job; first build takes 10-15 min)"
start=$(date +%s)
# -p 1: one package compiled at a time; nice 19: yield the CPU to anything else.
CGO_ENABLED=0 GOBIN="$bin_dir" GOFLAGS="${GOFLAGS:-} -p=1 -trimpath" \
  nice -n 19 go install "$MINIO_MODULE@$MINIO_VERSION"
echo "built $binary in $(( $(date +%s) - start ))s"
"$binary" --version | head -1 || true
