# inputs.modbus: Debian's python3-pymodbus serves Modbus TCP, RTU and ASCII over TCP, TLS and
# serial lines (inputs/modbus/testdata/modbus_server.py, run with /usr/bin/python3); socat makes
# the pty pairs that stand in for serial cables.
apt_need python3-pymodbus socat
