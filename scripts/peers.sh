#!/usr/bin/env bash
# Installs the real servers the tests talk to. Each scripts/peers.d/*.sh names what it needs:
#   apt_need PKG...     Debian packages (installed in one apt-get run; needs root)
#   step NAME COMMAND   a command run after the packages (npm ci, go install ...), in the root
# Built or downloaded peers go to .peers/ (ignored by git). Safe to run again: it only installs
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PEERS="$ROOT/.peers"
mkdir -p "$PEERS/bin"
export ROOT PEERS

APT=()
STEPS=()
apt_need() { APT+=("$@"); }
step() { STEPS+=("$1"$'\t'"$2"); }

for f in scripts/peers.d/*.sh; do
  [ -e "$f" ] || continue
  # shellcheck source=/dev/null
  . "$f"
done

missing=()
for p in "${APT[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
    echo "peers: missing Debian packages (run as root): ${missing[*]}" >&2
    exit 1
  fi
  echo "peers: installing ${missing[*]}"
  # Debian starts influxdb/victoria-metrics services on install where systemd runs (a CI
  # runner): the tests run their own instances on loopback, so keep the packaged ones off.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

for s in "${STEPS[@]}"; do
  name=${s%%$'\t'*}
  cmd=${s#*$'\t'}
  echo "peers: $name"
  bash -c "$cmd"
done
echo "peers: ready"
