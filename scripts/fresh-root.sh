#!/usr/bin/env bash
# Checks the test peers' Debian packages on a clean Debian root, as a new machine has them:
# debootstrap a minimal bookworm into DIR (default: a temporary folder), install what
# scripts/peers.d/*.sh ask for with --no-install-recommends (as peers.sh does), and start the
# Python peers there. Not part of the test suite (it downloads a base system, a few minutes);
# run it as root after changing a peers.d script. Needs debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-$(mktemp -d)}
mirror=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)}
[ -x "$root/usr/bin/apt-get" ] || debootstrap --variant=minbase bookworm "$root" ${mirror:+"$mirror"}

APT=()
apt_need() { APT+=("$@"); }
step() { :; }
for f in scripts/peers.d/*.sh; do
  # shellcheck source=/dev/null
  ROOT=$PWD PEERS=/nonexistent . "$f"
done
cp /etc/resolv.conf "$root/etc/resolv.conf"
mkdir -p "$root/peer"
cp inputs/modbus/testdata/modbus_server.py "$root/peer/"
echo "fresh-root: installing ${APT[*]}"
chroot "$root" /bin/sh -c "apt-get update -q >/dev/null &&
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${APT[*]} >/dev/null"
echo "fresh-root: starting the Modbus peer"
chroot "$root" /usr/bin/python3 /peer/modbus_server.py --check --port 0 2>&1 | grep -E '^OK|Error'
echo "fresh-root: ok ($root)"
