# OPC UA test peer: node-opcua 2.182.2 (pinned in inputs/opcua/testdata/node-opcua/package.json;
# later versions need a newer Node than Debian's), installed from the committed lock file.
command -v node >/dev/null 2>&1 || apt_need nodejs npm
command -v npm >/dev/null 2>&1 || apt_need npm
step "node-opcua (inputs/opcua)" \
  "cd \"\$ROOT/inputs/opcua/testdata/node-opcua\" && { [ -d node_modules/node-opcua ] || npm ci --no-audit --no-fund; }"
