#!/usr/bin/python3
"""Modbus test peer for tagpipe, built on Debian's python3-pymodbus (3.0.x); run it with
/usr/bin/python3, since the Debian package is not visible to other interpreters.

Transports (--transport):
  tcp           Modbus TCP (MBAP header), the default
  rtu-over-tcp  RTU frames (unit id + PDU + CRC16) over a plain TCP socket
  tls           Modbus/TCP Security: MBAP frames inside TLS 1.2+ (needs --cert/--key)
  ascii-over-tcp  ASCII frames (':' hex LRC CRLF) over a plain TCP socket (tagpipe's addition)
  serial        RTU (or --framer ascii: ASCII) on a serial device, e.g. one end of a socat pty pair

Data of every served unit (zero-based addresses 0..size-1, default size 100):
  holding  0: 0x1234   1: 0xFFFF (-1)   2-3: float32 3.14 ABCD   4-5: uint32 0x12345678 ABCD
           6-9: ASCII "tagpipe!"        others: address i holds i
  input    0: counter, +1 every --tick seconds (wraps at 65536)   others: 1000 + i
  coils    i: True when i is even       discrete i: True when i % 3 == 0
Units do not share data; writes (FC 5, 6, 15, 16) change it.
--typed (tagpipe's addition) puts a layout of every data type and byte order in holding
registers 100.. (table size at least 300), each value packed by Python's struct module;
--print-layout prints that layout as JSON lines (name, data_type, byte_order, address,
length, decimals, bit, value) and exits, so that tests compare against Python's values.
Exceptions:
  any read past size-1                    -> 02 illegal data address
  more than 125 registers / 2000 bits     -> 03 illegal data value
  unknown function code                   -> 01 illegal function
  holding register >= --fault-from        -> 04 server device failure
  unit U given as --exc-unit U:C          -> exception C to every request (e.g. 7:6 busy, 8:11 gateway)
  unit in neither list                    -> no answer at all (the client times out)
Faults (tagpipe's addition, --fault UNIT:KIND[:ARG], repeatable):
  delay:S    every answer of the unit is sent S seconds late (the whole server waits)
  delay1:S   only the first answer is late
  busy:N     exception 06 (busy) to N requests, then one normal answer, and again
  tid        the answer carries transaction id + 1 (MBAP framings)
  unit       the answer carries unit id + 1 (checksum kept valid)
  short      the byte count says 2 bytes more than the answer holds (MBAP length kept consistent)
  crc        the checksum of the answer is wrong (RTU and ASCII framings)
Prints "READY <host> <port>" (or "READY <device>") on stdout once it serves; SIGTERM stops it.
--check starts the server, reads holding register 0 from it as a client and exits: 0 when the
peer works, else Python's own error (a module missing on a new machine, say).
"""
import argparse
import asyncio
import ipaddress
import json
import signal
import struct
import sys
import time

import pymodbus
from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                ModbusSlaveContext)
from pymodbus.framer.ascii_framer import ModbusAsciiFramer
from pymodbus.framer.rtu_framer import ModbusRtuFramer
from pymodbus.framer.socket_framer import ModbusSocketFramer
from pymodbus.pdu import ExceptionResponse
from pymodbus.server.async_io import ModbusSerialServer, ModbusTcpServer, ModbusTlsServer
from pymodbus.utilities import computeCRC, computeLRC


class FaultyBlock(ModbusSequentialDataBlock):
    """Holding registers whose reads fail (exception 04) from a given address on."""
    def __init__(self, values, fault_from):
        super().__init__(0, values)
        self.fault_from = fault_from

    def getValues(self, address, count=1):
        if self.fault_from is not None and address + count > self.fault_from:
            raise RuntimeError(f"simulated fault at {address}+{count}")
        return super().getValues(address, count)


def holding_values(size):
    vals = list(range(size))
    special = [0x1234, 0xFFFF, *struct.unpack(">HH", struct.pack(">f", 3.14)),
               *struct.unpack(">HH", struct.pack(">I", 0x12345678)),
               *struct.unpack(">HHHH", b"tagpipe!")]
    vals[: len(special)] = special[:size]
    return vals


# --- typed layout (tagpipe) ------------------------------------------------------------------
TYPED_BASE = 100
STRUCT = {"INT16": "h", "UINT16": "H", "INT32": "i", "UINT32": "I", "INT64": "q",
          "UINT64": "Q", "FLOAT16": "e", "FLOAT32": "f", "FLOAT64": "d"}


def arrange(big, order):
    """Bytes of a big-endian value as a device with byte_order `order` sends them: A is the most
    significant byte; BA/BADC swap the bytes of each register, DCBA/CDAB reverse the registers
    (DCBA both)."""
    words = [big[i:i + 2] for i in range(0, len(big), 2)]
    if order in ("BA", "BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order in ("DCBA", "CDAB"):
        words = words[::-1]
    return b"".join(words)


def typed_layout():
    """(entry, registers) for every data type and byte order."""
    out = []
    addr = TYPED_BASE

    def add(name, data_type, order, big, value, **extra):
        nonlocal addr
        wire = big if data_type == "STRING" else arrange(big, order)
        regs = list(struct.unpack(">%dH" % (len(wire) // 2), wire))
        e = dict(name=name, data_type=data_type, byte_order=order, address=addr,
                 length=len(regs), value=value)
        e.update(extra)
        out.append((e, regs))
        addr += len(regs)

    orders16, orders = ("AB", "BA"), ("ABCD", "DCBA", "BADC", "CDAB")
    samples = {"INT16": [-12345, 32767], "UINT16": [54321], "FLOAT16": [1.5, -65504.0, 0.0001, 6e-08],
               "INT32": [-123456789], "UINT32": [3123456789], "FLOAT32": [3.14159, -1.5e-7],
               "INT64": [-1234567890123456789], "UINT64": [12345678901234567890],
               "FLOAT64": [2.718281828459045, -1e300]}
    for t, vals in samples.items():
        for i, v in enumerate(vals):
            big = struct.pack(">" + STRUCT[t], v)
            back = struct.unpack(">" + STRUCT[t], big)[0]  # what the registers really hold
            for o in (orders16 if len(big) == 2 else orders):
                add(f"{t.lower()}_{i}_{o.lower()}", t, o, big, back)
    # one register 0xFE7F (AB) or 0x7FFE (BA on the wire): high byte 0xFE, low byte 0x7F
    for o in orders16:
        for t, v in (("INT8H", -2), ("INT8L", 127), ("UINT8H", 254), ("UINT8L", 127)):
            add(f"{t.lower()}_{o.lower()}", t, o, bytes([0xFE, 0x7F]), v)
    # FIXED / UFIXED: integers with implied decimals, 1, 2 and 4 registers
    for t, raw, n, dec, o in (("FIXED", -1234, 1, 2, "AB"), ("FIXED", 123456789, 2, 3, "CDAB"),
                              ("UFIXED", 65000, 1, 1, "BA"), ("UFIXED", 4000000000, 2, 4, "DCBA"),
                              ("FIXED", -98765432101, 4, 5, "BADC")):
        big = raw.to_bytes(2 * n, "big", signed=(t == "FIXED"))
        add(f"{t.lower()}_{n}_{o.lower()}", t, o, big, raw / 10 ** dec, decimals=dec)
    # STRING: AB = first character in the high byte of a register, BA = in the low byte
    for text, n, o in (("Hello, Modbus!", 8, "AB"), ("Hello, Modbus!", 8, "BA"), ("abc", 2, "AB")):
        b = text.encode().ljust(2 * n, b"\0")
        if o == "BA":
            b = b"".join(b[i:i + 2][::-1] for i in range(0, len(b), 2))
        add(f"string_{len(text)}_{o.lower()}", "STRING", o, b, text)
    # BIT of a holding register: 0xA005 = bits 0, 2, 13, 15 set
    start = addr
    for bit in (0, 1, 2, 13, 14, 15):
        e = dict(name=f"bit_{bit}", data_type="BIT", byte_order="AB", address=start, length=1,
                 bit=bit, value=bool(0xA005 >> bit & 1))
        out.append((e, [0xA005] if bit == 0 else []))
    addr += 1
    return out


def apply_typed(values):
    for e, regs in typed_layout():
        values[e["address"]:e["address"] + len(regs)] = regs
    return values


def build_context(args):
    typed = typed_or_plain(args)
    slaves = {}
    for unit in args.units:
        slaves[unit] = ModbusSlaveContext(
            hr=FaultyBlock(typed(holding_values(args.size)), args.fault_from),
            ir=ModbusSequentialDataBlock(0, [1000 + i for i in range(args.size)]),
            co=ModbusSequentialDataBlock(0, [i % 2 == 0 for i in range(args.size)]),
            di=ModbusSequentialDataBlock(0, [i % 3 == 0 for i in range(args.size)]),
            zero_mode=True,  # PDU address 0 is element 0 (the default adds 1)
        )
    return ModbusServerContext(slaves=slaves, single=False)


def typed_or_plain(args):
    return apply_typed if args.typed else (lambda v: v)


async def tick(context, units, period):
    while True:
        await asyncio.sleep(period)
        for unit in units:
            store = context[unit].store["i"]
            store.values[0] = (store.values[0] + 1) % 65536


async def main(args):
    context = build_context(args)
    exc_units = dict(args.exc_unit)
    for unit in exc_units:  # these units need a context so that requests reach the manipulator
        context[unit] = context[args.units[0]]

    faults = {}
    for unit, kind, arg in args.fault:
        faults.setdefault(unit, []).append((kind, arg))
    framer = {"tcp": ModbusSocketFramer, "tls": ModbusSocketFramer, "rtu-over-tcp": ModbusRtuFramer,
              "ascii-over-tcp": ModbusAsciiFramer,
              "serial": ModbusAsciiFramer if args.framer == "ascii" else ModbusRtuFramer}[args.transport]
    counts = {}

    def exception(response, code):
        exc = ExceptionResponse(response.function_code, code)
        exc.transaction_id, exc.unit_id = response.transaction_id, response.unit_id
        return exc

    def manipulate(response):
        unit = response.unit_id
        code = exc_units.get(unit)
        if code is not None and response.function_code < 0x80:
            return exception(response, code), False
        for kind, arg in faults.get(unit, []):
            n = counts[unit, kind] = counts.get((unit, kind), 0) + 1
            if kind == "delay" or (kind == "delay1" and n == 1):
                time.sleep(arg)
            elif kind == "busy" and response.function_code < 0x80 and n % (int(arg) + 1) != 0:
                return exception(response, 6), False
            elif kind in ("tid", "unit", "short", "crc"):
                return corrupt(framer, response, kind), True
        return response, False

    kw = dict(response_manipulator=manipulate)
    addr = (args.host, args.port)
    if args.transport == "tcp":
        server = ModbusTcpServer(context, ModbusSocketFramer, None, addr, **kw)
    elif args.transport == "rtu-over-tcp":
        server = ModbusTcpServer(context, ModbusRtuFramer, None, addr, **kw)
    elif args.transport == "ascii-over-tcp":
        server = ModbusTcpServer(context, ModbusAsciiFramer, None, addr, **kw)
    elif args.transport == "tls":  # pymodbus' default TLS framer drops the MBAP header
        server = ModbusTlsServer(context, ModbusSocketFramer, None, addr, certfile=args.cert,
                                 keyfile=args.key, reqclicert=bool(args.client_ca), **kw)
        if args.client_ca:
            server.sslctx.load_verify_locations(cafile=args.client_ca)
    else:
        server = ModbusSerialServer(context, framer, port=args.device,
                                    baudrate=args.baudrate, **kw)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    tasks = [asyncio.create_task(tick(context, args.units, args.tick))]
    if args.transport == "serial":
        await server.start()
        print("READY", args.device, flush=True)
    else:
        tasks.append(asyncio.create_task(server.serve_forever()))
        await server.serving
        port = server.server.sockets[0].getsockname()[1]
        print("READY", args.host, port, flush=True)
        if args.check:
            await check(args.host, port, args.units[0])
            stop.set_result(None)
    await stop
    await server.shutdown()


async def check(host, port, unit):
    """--check: read holding register 0 from the server just started, as a client would."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(struct.pack(">HHHBBHH", 1, 0, 6, unit, 3, 0, 1))
    answer = await asyncio.wait_for(reader.readexactly(11), 5)
    writer.close()
    value = struct.unpack(">H", answer[9:11])[0]
    if answer[7] != 3 or value != 0x1234:
        sys.exit(f"check: holding register 0 read back as {answer.hex()}, want 0x1234")
    print("OK pymodbus", pymodbus.__version__, "serves Modbus TCP", flush=True)


def corrupt(framer, response, kind):
    """The answer to response, encoded, then broken in the way kind says."""
    if framer is ModbusSocketFramer:
        pkt = bytearray(ModbusSocketFramer(None).buildPacket(response))
        if kind == "tid":
            struct.pack_into(">H", pkt, 0, (pkt[0] << 8 | pkt[1]) + 1 & 0xFFFF)
        elif kind == "unit":
            pkt[6] = pkt[6] + 1 & 0xFF
        elif kind == "short" and len(pkt) >= 11:
            del pkt[-2:]
            struct.pack_into(">H", pkt, 4, len(pkt) - 6)
        return bytes(pkt)
    body = bytearray([response.unit_id, response.function_code]) + response.encode()
    if kind == "unit":
        body[0] = body[0] + 1 & 0xFF
    if framer is ModbusRtuFramer:
        crc = computeCRC(bytes(body))
        if kind == "crc":
            crc ^= 0x0101
        return bytes(body) + struct.pack(">H", crc)
    lrc = computeLRC(bytes(body))
    if kind == "crc":
        lrc = lrc + 1 & 0xFF
    return b":" + bytes(body).hex().upper().encode() + b"%02X\r\n" % lrc


def loopback(host):
    if not ipaddress.ip_address(host).is_loopback:
        raise argparse.ArgumentTypeError(f"{host} is not a loopback address")
    return host


def fault_arg(s):
    parts = s.split(":")
    kinds = ("delay", "delay1", "busy", "tid", "unit", "short", "crc")
    if len(parts) not in (2, 3) or parts[1] not in kinds:
        raise argparse.ArgumentTypeError(f"{s}: want UNIT:KIND[:ARG], KIND one of {kinds}")
    return int(parts[0]), parts[1], float(parts[2]) if len(parts) == 3 else 0.0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", type=loopback, default="127.0.0.1")
    p.add_argument("--port", type=int, default=5020, help="0: a free port (see READY line)")
    p.add_argument("--transport", default="tcp",
                   choices=["tcp", "rtu-over-tcp", "ascii-over-tcp", "tls", "serial"])
    p.add_argument("--framer", default="rtu", choices=["rtu", "ascii"], help="for --transport serial")
    p.add_argument("--units", type=lambda s: [int(u) for u in s.split(",")], default=[1],
                   help="served unit ids, e.g. 1,2,3")
    p.add_argument("--exc-unit", type=lambda s: tuple(int(x) for x in s.split(":")),
                   action="append", default=[], help="UNIT:CODE, answer exception CODE")
    p.add_argument("--size", type=int, default=100, help="registers/bits per table")
    p.add_argument("--fault-from", type=int, default=None, help="HR address where 04 starts")
    p.add_argument("--tick", type=float, default=1.0, help="seconds between counter steps")
    p.add_argument("--cert", help="TLS server certificate (PEM)"); p.add_argument("--key")
    p.add_argument("--client-ca", help="require client certificates signed by this CA")
    p.add_argument("--device", help="serial device for --transport serial")
    p.add_argument("--baudrate", type=int, default=19200)
    p.add_argument("--typed", action="store_true", help="typed layout in holding 100..")
    p.add_argument("--print-layout", action="store_true", help="print the typed layout, exit")
    p.add_argument("--check", action="store_true",
                   help="start, read holding register 0 as a client, exit (0: the peer works)")
    p.add_argument("--fault", action="append", default=[], type=fault_arg,
                   help="UNIT:KIND[:ARG], see the description")
    a = p.parse_args()
    if a.print_layout:
        for e, _ in typed_layout():
            print(json.dumps(e))
        sys.exit(0)
    if a.typed:
        a.size = max(a.size, 300)
    asyncio.run(main(a))
