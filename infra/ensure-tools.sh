#!/usr/bin/env bash
# Make sure the toolchains and servers the real services need are on this machine, installing what
# is missing from the package registries (nothing else is reachable here):
#
#   jvm       java >= 17, mvn -> Debian packages openjdk-17-jre-headless, maven   (apt-get, as root)
#   go        go >= 1.24      -> the machine's go if new enough; else Debian's golang-go plus the Go
#                                toolchain module golang.org/toolchain@<GO_TOOLCHAIN> fetched by the go
#                                command from the Go module proxy (Debian 12 ships Go 1.19, MinIO needs 1.24)
#   postgres  pg_ctl, postgres -> Debian package postgresql (PostgreSQL 15 on Debian 12)
#   redis     redis-server, redis-cli -> Debian package redis-server
#
# usage: ensure-tools.sh [COMPONENT...]    (default: jvm go)
# Prints `export ...` lines for the caller to eval (PATH to a fetched Go). Idempotent.
#   eval "$(infra/ensure-tools.sh)"
set -euo pipefail

GO_TOOLCHAIN="${QRSDP_GO_TOOLCHAIN:-v0.0.1-go1.24.5.linux-amd64}"
MIN_GO_MINOR=24
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools_dir="$here/.build/tools"

say() { echo "ensure-tools: $*" >&2; }
die() { say "error: $*"; exit 1; }

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "$1 is missing and this is not a Debian/Ubuntu machine: install $*"
  [[ $(id -u) -eq 0 ]] || die "$1 is missing: run as root or install it: apt-get install $*"
  say "installing $* with apt-get"
  if [[ ! -f /var/lib/apt/periodic/qrsdp-updated ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/qrsdp-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 \
    || die "apt-get install $* failed"
}

# The newest PostgreSQL server installed by Debian's packages (or on the PATH), as its bin folder.
pg_bindir() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  if [[ -n "$d" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
    printf '%s' "$d"
  elif command -v pg_ctl >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"
  fi
}

ensure_postgres() {
  [[ -n "$(pg_bindir)" ]] || apt_install postgresql
  [[ -n "$(pg_bindir)" ]] || die "postgresql installed, but no pg_ctl/postgres found under /usr/lib/postgresql"
}

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
  apt_install redis-server
}

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
ensure_jvm() {
  if ! command -v java >/dev/null 2>&1 || [[ "$(java_major)" -lt 17 ]]; then
    apt_install openjdk-17-jre-headless
  fi
  command -v mvn >/dev/null 2>&1 || apt_install maven
}

go_minor() { "$1" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p'; }
ensure_go() {
  go_bin="$(command -v go || true)"
  [[ -z "$go_bin" && -x /usr/local/go/bin/go ]] && go_bin=/usr/local/go/bin/go
  if [[ -z "$go_bin" ]]; then
    apt_install golang-go
    go_bin="$(command -v go)"
  fi
  minor="$(go_minor "$go_bin")"
  if [[ -z "$minor" || "$minor" -lt ${QRSDP_MIN_GO_MINOR:-$MIN_GO_MINOR} ]]; then
    fetched="$tools_dir/go/bin/go"
    if [[ ! -x "$fetched" ]]; then
      say "go 1.$minor is older than 1.$MIN_GO_MINOR: fetching golang.org/toolchain@$GO_TOOLCHAIN from the module proxy"
      work="$(mktemp -d)"
      dir="$(cd "$work" && GOFLAGS=-mod=mod GOPATH="$tools_dir/gopath" "$go_bin" mod download -json \
        "golang.org/toolchain@$GO_TOOLCHAIN" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
      rm -rf "$work"
      [[ -n "$dir" && -f "$dir/bin/go" ]] || die "could not fetch golang.org/toolchain@$GO_TOOLCHAIN"
      # Module zips carry no file modes: restore write and the executables' x bits.
      rm -rf "$tools_dir/go" && cp -r "$dir" "$tools_dir/go" && chmod -R u+w "$tools_dir/go"
      chmod +x "$tools_dir/go/bin/"* "$tools_dir/go/pkg/tool/"*/*
    fi
    echo "export PATH=\"$tools_dir/go/bin:\$PATH\" GOTOOLCHAIN=local"
  fi
}

components=("$@")
[[ ${#components[@]} -gt 0 ]] || components=(jvm go)
for c in "${components[@]}"; do
  case "$c" in
    jvm) ensure_jvm ;;
    go) ensure_go ;;
    postgres) ensure_postgres ;;
    redis) ensure_redis ;;
    *) die "unknown component: $c (expected jvm, go, postgres or redis)" ;;
  esac
done
