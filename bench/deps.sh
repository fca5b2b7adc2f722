#!/usr/bin/env bash
# Installs stunnel (Debian package stunnel4) for `make bench` when it is missing. Without root the
# harness runs anyway and leaves the stunnel path out.
set -euo pipefail

if command -v stunnel >/dev/null 2>&1 || command -v stunnel4 >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "bench deps: stunnel missing; run as root to install stunnel4 (the stunnel path will be skipped)" >&2
  exit 0
fi
echo "bench deps: installing stunnel4"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends stunnel4 >/dev/null
