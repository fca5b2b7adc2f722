#!/usr/bin/env bash
# Installs what `make test` and `make demo` need on a fresh Debian machine:
# iproute2 (ip), iptables (nf_tables backend), nftables, util-linux (nsenter), curl (used in the
# commands `testbed up` and the README's Debugging section suggest).
# Go itself must already be installed (go 1.26+).
set -euo pipefail

if ! command -v go >/dev/null 2>&1; then
  echo "deps: 'go' is not on PATH; install Go 1.26 or newer first" >&2
  exit 1
fi

missing=()
for tool in ip:iproute2 iptables:iptables iptables-restore:iptables nft:nftables nsenter:util-linux curl:curl; do
  cmd=${tool%%:*} pkg=${tool##*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

# Deduplicate package names.
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing ${pkgs[*]}; run as root to install them (root-only tests will be skipped)" >&2
  exit 0
fi
echo "deps: installing ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
