#!/usr/bin/env bash
# scripts/setup.sh — the one shared setup step for building, testing and the demo.
#
# Idempotent and quick when everything is present:
#   * installs the Debian packages below that are missing (apt-get; `apt-get update`
#     runs once, only if something is missing),
#   * checks that Go is available (adds /usr/local/go/bin to PATH if needed),
#   * downloads the Go module dependencies (`go mod download`).
#
# Needs root only when a package is missing. Safe to run any number of times.
set -euo pipefail

# Debian packages the build, tests, demo and benchmarks need. Later issues add to this list.
PACKAGES="make iproute2 nftables iptables iputils-ping iperf3 dnsmasq-base busybox-static procps ca-certificates xenstore-utils qemu-system-x86"

cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------------------
missing=()
for pkg in $PACKAGES; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	if [ "$status" != "installed" ]; then
		missing+=("$pkg")
	fi
done

if [ "${#missing[@]}" -gt 0 ]; then
	if ! command -v apt-get >/dev/null 2>&1; then
		die "missing packages: ${missing[*]}; this script installs them with apt-get (Debian/Ubuntu) — install them by hand on this system"
	fi
	if [ "$(id -u)" -ne 0 ]; then
		die "missing packages: ${missing[*]}; run as root (sudo $0) so apt-get can install them"
	fi
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q </dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
else
	log "packages present: $PACKAGES"
fi

# --- Go --------------------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		export PATH="$PATH:/usr/local/go/bin"
	else
		die "Go not found on PATH or at /usr/local/go/bin/go; install Go $(sed -n 's/^go //p' go.mod) or newer from https://go.dev/dl/"
	fi
fi
log "$(go version)"

# --- Go modules ------------------------------------------------------------------------
go mod download
log "go modules present"
