# InfluxDB and VictoriaMetrics for outputs.influxdb and outputs.influxdb_v2 (issue 5).
#   influxdb 1.6.7 (Debian): v1 /write, real 400 partial writes
#   influxdb-client: the `influx` CLI, handy for looking at a test database by hand
#   victoria-metrics (Debian): both /write and /api/v2/write
#   influxd 1.8.3 built from the Go module proxy: a real /api/v2/write (no InfluxDB 2.x runs here)
# The packaged services are not started (peers.sh keeps policy-rc.d in place); tests run their
# own instances on loopback ports.
apt_need influxdb influxdb-client victoria-metrics
step "influxd 1.8.3" '
  bin="$PEERS/bin/influxd-1.8.3"
  if [ -x "$bin" ]; then exit 0; fi
  tmp=$(mktemp -d)
  trap "rm -rf \"$tmp\"" EXIT
  GOBIN="$tmp" go install github.com/influxdata/influxdb/cmd/influxd@v1.8.3
  mv "$tmp/influxd" "$bin"
'
