package main

import (
	"log/slog"
	"net"
	"os"
)

// sdNotify tells systemd the service's state ("READY=1", "RELOADING=1", "STOPPING=1") when it
// runs the agent as a Type=notify service; without NOTIFY_SOCKET it does nothing. The protocol
// (sd_notify(3)) is one datagram on a unix socket, "@" naming an abstract one (Go's net package
// maps it): no library needed.
func sdNotify(state string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" || (sock[0] != '/' && sock[0] != '@') {
		return
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		slog.Warn("systemd notification not sent", "state", state, "error", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		slog.Warn("systemd notification not sent", "state", state, "error", err)
	}
}
