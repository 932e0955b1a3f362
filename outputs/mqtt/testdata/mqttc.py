#!/usr/bin/python3
"""A test MQTT client on Debian's python3-paho-mqtt: a client that tagpipe did not write.

It subscribes to the topics given and appends every message it receives to --out as a line
"MSG <topic as hex> <qos> <retain 0/1> <payload as hex>", flushed at once. It prints READY on
stdout once it is connected and every subscription was acknowledged. With --persistent it keeps
its session on the broker (clean session off), so that messages published while it is
disconnected (a broker restart) wait for it; it reconnects by itself.
"""
import argparse
import binascii
import sys
import threading

import paho.mqtt.client as mqtt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", action="append", required=True)
    ap.add_argument("--qos", type=int, default=1)
    ap.add_argument("--client-id", default="")
    ap.add_argument("--persistent", action="store_true")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cafile")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--username")
    ap.add_argument("--password")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("loopback only")

    out = open(a.out, "a", buffering=1)
    lock = threading.Lock()
    ready = threading.Event()
    pending = set()

    c = mqtt.Client(client_id=a.client_id, clean_session=not a.persistent)
    if a.cafile:
        c.tls_set(ca_certs=a.cafile, certfile=a.cert, keyfile=a.key)
    if a.username:
        c.username_pw_set(a.username, a.password)
    c.reconnect_delay_set(min_delay=0.05, max_delay=0.5)

    def on_connect(client, userdata, flags, rc):
        if rc != 0:
            print("CONNECT-REFUSED %d" % rc, file=sys.stderr, flush=True)
            return
        for t in a.topic:
            _, mid = client.subscribe(t, a.qos)
            pending.add(mid)

    def on_subscribe(client, userdata, mid, granted):
        pending.discard(mid)
        if not pending and not ready.is_set():
            ready.set()
            print("READY", flush=True)

    def on_message(client, userdata, msg):
        line = "MSG %s %d %d %s\n" % (
            binascii.hexlify(msg.topic.encode()).decode(), msg.qos, 1 if msg.retain else 0,
            binascii.hexlify(msg.payload).decode())
        with lock:
            out.write(line)

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect(a.host, a.port, keepalive=10)
    c.loop_forever(retry_first_connection=True)


if __name__ == "__main__":
    main()
