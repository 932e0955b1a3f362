# inputs.modbus: Debian's python3-pymodbus serves Modbus TCP, RTU and ASCII over TCP, TLS and
# serial lines (inputs/modbus/testdata/modbus_server.py, run with /usr/bin/python3); socat makes
# the pty pairs that stand in for serial cables.
#
# pymodbus 3.0's server package imports serial and serial_asyncio even for TCP, but the Debian
# package only recommends python3-serial-asyncio (which pulls in python3-serial), and peers.sh
# installs without recommends: name both. The step below starts the peer once, so that a module
# missing on a new machine shows here with Python's own error, not later as a skipped test.
apt_need python3-pymodbus python3-serial python3-serial-asyncio socat
step "pymodbus peer (inputs/modbus)" '
  out=$(timeout 20 /usr/bin/python3 "$ROOT/inputs/modbus/testdata/modbus_server.py" --check --port 0 2>&1) || {
    echo "peers: the Modbus test peer does not start:" >&2
    echo "$out" >&2
    exit 1
  }
  echo "peers: $(printf "%s\n" "$out" | grep "^OK")"
'
