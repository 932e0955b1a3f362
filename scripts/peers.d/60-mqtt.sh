# outputs.mqtt: Debian's mosquitto is the broker (the tests start their own on free loopback
# ports), mosquitto-clients publishes STATE and NCMD, python3-paho-mqtt subscribes
# (outputs/mqtt/testdata/mqttc.py, run with /usr/bin/python3), protobuf-compiler compiles the
# Sparkplug B schema (go generate ./outputs/mqtt/sparkplugb), and Eclipse Tahu's
# sparkplug-payload 1.0.3 (pinned in outputs/mqtt/testdata/sparkplug/package-lock.json) decodes
# what the Sparkplug node writes.
apt_need mosquitto mosquitto-clients python3-paho-mqtt protobuf-compiler
command -v node >/dev/null 2>&1 || apt_need nodejs npm
command -v npm >/dev/null 2>&1 || apt_need npm
step "sparkplug-payload (outputs/mqtt)" \
  "cd \"\$ROOT/outputs/mqtt/testdata/sparkplug\" && { [ -d node_modules/sparkplug-payload ] || npm ci --no-audit --no-fund; }"
