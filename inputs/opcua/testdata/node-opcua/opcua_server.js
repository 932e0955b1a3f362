// OPC UA test peer for tagpipe's inputs.opcua tests, built on node-opcua (2.182.2, pinned).
// Started from ../shared/peers/node-opcua/opcua_server.js and extended for the tests.
//
//   node opcua_server.js [--port 4840] [--host 127.0.0.1] [--pki DIR] [--no-anonymous]
//        [--user NAME:PASSWORD]... [--period-ms 100] [--extra-namespaces N] [--bulk N]
//        [--max-nodes-per-read N] [--max-monitored-items-per-call N] [--hide-limits]
//        [--reject-unknown-certs]
//
// --port 0 picks a free port. Endpoints: security policy None (mode None), and
// Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss with Sign and SignAndEncrypt.
// Identities: anonymous (unless --no-anonymous), user names (default user1:password1) and X.509
// certificates. Client (and user) certificates are trusted automatically unless
// --reject-unknown-certs. The server certificate is created under --pki on first start (a
// second or two); reuse the folder to skip that (and to keep the same server certificate).
//
// Namespace 1 (the server's own; every variable is read-only unless said otherwise):
//   ns=1;s=Tagpipe     Folder below Objects holding the variables below
//   ns=1;s=Sine        Double   sin(2*pi*t/10s), updated every --period-ms
//   ns=1;s=AnalogSine  Double   the same, an AnalogItem with EURange -1..1 (percent deadbands)
//   ns=1;s=FastCounter UInt32   +1 every --period-ms, from 1
//   ns=1;s=Counter     UInt32   +1 every second
//   ns=1;s=Toggle      Boolean  flips every second
//   ns=1;s=Status      String   "ok"
//   ns=1;s=Setpoint    Double   42.5, writable
//   ns=1;i=1001        Int16    -7 (numeric id)
//   ns=1;g=72962B91-FA75-4AE6-8D28-B404DC7DAF63  Float  1.5 (GUID id)
//   ns=1;b=dGFncGlwZQ==  Int64  1234567890123 (opaque id)
//   ns=1;s=Broken      Double   always BadSensorFailure, no value
//   ns=1;s=Uncertain   Double   7.5 with UncertainLastUsableValue
//   ns=1;s=Types       Folder: one variable per built-in type, ns=1;s=Types.<Type> (see TYPES)
//   ns=1;s=Arrays      Folder: ns=1;s=Arrays.Double [1.5,-2.5,3.25], .Int32 [1,2,3,4],
//                      .String ["a","b c"], .Boolean [true,false]
//   ns=1;s=Deep        Folder: ns=1;s=Deep.Value Double 1, and folder ns=1;s=Deep.Level2 with
//                      ns=1;s=Deep.Level2.Value Double 2 and folder ns=1;s=Deep.Level2.Level3
//                      with ns=1;s=Deep.Level2.Level3.Value Double 3
//   ns=1;s=Bulk        Folder with --bulk N Double variables ns=1;s=Bulk.<i> = i + 0.5
// Namespace "urn:tagpipe:peer", registered after --extra-namespaces N namespaces
// "urn:tagpipe:extra:<i>" (so its index is 2 + N; a restart with another N moves it):
//   s=Sine Double (same value as ns=1;s=Sine), s=FastCounter UInt32 (same), i=2001 Int32 2001
//
// --max-nodes-per-read and --max-monitored-items-per-call set the server's operation limits
// (it answers BadTooManyOperations above them); --hide-limits keeps enforcing them but makes
// the OperationLimits variables read 0 ("no limit"), so a client only finds out by trying.
//
// Prints "READY opc.tcp://HOST:PORT" on stdout once listening (node-opcua also writes
// warnings to stdout: look for the READY line); SIGTERM stops it. Clients must dial that
// exact URL (or localhost): the server matches the session's endpoint URL to its own.
"use strict";
const net = require("net");
const path = require("path");
const opcua = require("node-opcua");
const { DataType, StatusCodes, Variant, VariantArrayType, DataValue, SecurityPolicy, MessageSecurityMode } = opcua;

function args(argv) {
  const o = {
    port: 4840, host: "127.0.0.1", pki: "./pki", anonymous: true, users: [], periodMs: 100,
    extraNamespaces: 0, bulk: 0, maxNodesPerRead: 0, maxMonitoredItemsPerCall: 0, hideLimits: false,
    rejectUnknown: false,
  };
  const num = (v, name) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(name + ": not a number: " + v);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--port") o.port = num(argv[++i], a);
    else if (a === "--host") o.host = argv[++i];
    else if (a === "--pki") o.pki = argv[++i];
    else if (a === "--no-anonymous") o.anonymous = false;
    else if (a === "--user") o.users.push(argv[++i]);
    else if (a === "--period-ms") o.periodMs = num(argv[++i], a);
    else if (a === "--extra-namespaces") o.extraNamespaces = num(argv[++i], a);
    else if (a === "--bulk") o.bulk = num(argv[++i], a);
    else if (a === "--max-nodes-per-read") o.maxNodesPerRead = num(argv[++i], a);
    else if (a === "--max-monitored-items-per-call") o.maxMonitoredItemsPerCall = num(argv[++i], a);
    else if (a === "--hide-limits") o.hideLimits = true;
    else if (a === "--reject-unknown-certs") o.rejectUnknown = true;
    else throw new Error("unknown argument " + a);
  }
  if (!net.isIP(o.host) || !(o.host.startsWith("127.") || o.host === "::1")) {
    throw new Error(o.host + " is not a loopback address");
  }
  if (o.users.length === 0) o.users.push("user1:password1");
  o.users = new Map(o.users.map((u) => [u.slice(0, u.indexOf(":")), u.slice(u.indexOf(":") + 1)]));
  return o;
}

// One variable per built-in scalar type, with the value a test expects to read back.
// Int64/UInt64 are [high, low] 32-bit words in node-opcua.
const TYPES = [
  ["Boolean", DataType.Boolean, true],
  ["SByte", DataType.SByte, -8],
  ["Byte", DataType.Byte, 200],
  ["Int16", DataType.Int16, -1600],
  ["UInt16", DataType.UInt16, 60000],
  ["Int32", DataType.Int32, -320000],
  ["UInt32", DataType.UInt32, 4000000000],
  ["Int64", DataType.Int64, [0xfffffffe, 0xd5fa0e00]], // -5000000000
  ["UInt64", DataType.UInt64, [0xab54a98c, 0xeb1f0ad2]], // 12345678901234567890
  ["Float", DataType.Float, 3.25],
  ["Double", DataType.Double, -2.5e10],
  ["String", DataType.String, "héllo, wörld=1"],
  ["DateTime", DataType.DateTime, new Date("2024-01-02T03:04:05.678Z")],
  ["Guid", DataType.Guid, "72962B91-FA75-4AE6-8D28-B404DC7DAF63"],
  ["ByteString", DataType.ByteString, Buffer.from("tagpipe")],
  ["XmlElement", DataType.XmlElement, "<a>1</a>"],
  ["NodeId", DataType.NodeId, opcua.coerceNodeId("ns=1;s=Sine")],
  ["StatusCode", DataType.StatusCode, StatusCodes.UncertainInitialValue],
  ["QualifiedName", DataType.QualifiedName, new opcua.QualifiedName({ namespaceIndex: 1, name: "Q" })],
  ["LocalizedText", DataType.LocalizedText, new opcua.LocalizedText({ locale: "en", text: "Hello" })],
];

async function main() {
  const o = args(process.argv.slice(2));
  const certificateManager = new opcua.OPCUACertificateManager({
    rootFolder: o.pki,
    automaticallyAcceptUnknownCertificate: !o.rejectUnknown,
  });
  const userCertificateManager = new opcua.OPCUACertificateManager({
    rootFolder: path.join(o.pki, "user"),
    automaticallyAcceptUnknownCertificate: !o.rejectUnknown,
  });
  const operationLimits = {};
  if (o.maxNodesPerRead) operationLimits.maxNodesPerRead = o.maxNodesPerRead;
  if (o.maxMonitoredItemsPerCall) operationLimits.maxMonitoredItemsPerCall = o.maxMonitoredItemsPerCall;
  const server = new opcua.OPCUAServer({
    host: o.host,
    hostname: o.host.includes(":") ? `[${o.host}]` : o.host,
    alternateHostname: [o.host, "localhost"],
    port: o.port,
    serverCertificateManager: certificateManager,
    userCertificateManager,
    securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256,
      SecurityPolicy.Aes128_Sha256_RsaOaep, SecurityPolicy.Aes256_Sha256_RsaPss],
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
    allowAnonymous: o.anonymous,
    userManager: { isValidUser: (name, password) => o.users.get(name) === password },
    registerServerMethod: opcua.RegisterServerMethod.HIDDEN,
    buildInfo: { productName: "tagpipe-opcua-peer" },
    serverCapabilities: { operationLimits },
  });
  await server.initialize();

  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.getOwnNamespace();
  const folder = ns.addFolder(addressSpace.rootFolder.objects, { nodeId: "s=Tagpipe", browseName: "Tagpipe" });
  const state = { sine: 0, fast: 0, counter: 0, toggle: false, setpoint: 42.5 };
  const getter = (dataType, key) => ({ get: () => new Variant({ dataType, value: state[key] }) });
  const addIn = (space, parent, nodeId, browseName, dataType, value, extra = {}) =>
    space.addVariable({ componentOf: parent, nodeId, browseName, dataType, value, minimumSamplingInterval: 50,
      accessLevel: "CurrentRead", userAccessLevel: "CurrentRead", ...extra });
  const add = (...a) => addIn(ns, folder, ...a);

  const sine = add("s=Sine", "Sine", "Double", getter(DataType.Double, "sine"));
  const fast = add("s=FastCounter", "FastCounter", "UInt32", getter(DataType.UInt32, "fast"));
  const counter = add("s=Counter", "Counter", "UInt32", getter(DataType.UInt32, "counter"));
  const toggle = add("s=Toggle", "Toggle", "Boolean", getter(DataType.Boolean, "toggle"));
  add("s=Status", "Status", "String", { dataType: DataType.String, value: "ok" });
  add("s=Setpoint", "Setpoint", "Double", {
    get: () => new Variant({ dataType: DataType.Double, value: state.setpoint }),
    set: (v) => { state.setpoint = v.value; return StatusCodes.Good; },
  }, { accessLevel: "CurrentRead | CurrentWrite", userAccessLevel: "CurrentRead | CurrentWrite" });
  add("i=1001", "Int16Const", "Int16", { dataType: DataType.Int16, value: -7 });
  add("g=72962B91-FA75-4AE6-8D28-B404DC7DAF63", "GuidNode", "Float", { dataType: DataType.Float, value: 1.5 });
  add("b=dGFncGlwZQ==", "OpaqueNode", "Int64",
    { dataType: DataType.Int64, arrayType: VariantArrayType.Scalar, value: [287, 1912276171] });
  add("s=Broken", "Broken", "Double", {
    timestamped_get: () => new DataValue({ statusCode: StatusCodes.BadSensorFailure,
      sourceTimestamp: new Date(), serverTimestamp: new Date() }),
  });
  const analog = ns.addAnalogDataItem({ componentOf: folder, nodeId: "s=AnalogSine", browseName: "AnalogSine", dataType: "Double",
    engineeringUnitsRange: { low: -1, high: 1 }, minimumSamplingInterval: 50,
    accessLevel: "CurrentRead", userAccessLevel: "CurrentRead", value: getter(DataType.Double, "sine") });
  add("s=Uncertain", "Uncertain", "Double", {
    timestamped_get: () => new DataValue({ statusCode: StatusCodes.UncertainLastUsableValue,
      value: new Variant({ dataType: DataType.Double, value: 7.5 }),
      sourceTimestamp: new Date(), serverTimestamp: new Date() }),
  });

  const types = ns.addFolder(folder, { nodeId: "s=Types", browseName: "Types" });
  for (const [name, dataType, value] of TYPES) {
    addIn(ns, types, "s=Types." + name, name, DataType[dataType],
      { dataType, arrayType: VariantArrayType.Scalar, value });
  }
  const arrays = ns.addFolder(folder, { nodeId: "s=Arrays", browseName: "Arrays" });
  const arr = (name, dataType, value) => addIn(ns, arrays, "s=Arrays." + name, name, DataType[dataType],
    { dataType, arrayType: VariantArrayType.Array, value }, { valueRank: 1 });
  arr("Double", DataType.Double, [1.5, -2.5, 3.25]);
  arr("Int32", DataType.Int32, [1, 2, 3, 4]);
  arr("String", DataType.String, ["a", "b c"]);
  arr("Boolean", DataType.Boolean, [true, false]);

  const deep = ns.addFolder(folder, { nodeId: "s=Deep", browseName: "Deep" });
  addIn(ns, deep, "s=Deep.Value", "Value", "Double", { dataType: DataType.Double, value: 1 });
  const l2 = ns.addFolder(deep, { nodeId: "s=Deep.Level2", browseName: "Level2" });
  addIn(ns, l2, "s=Deep.Level2.Value", "Value", "Double", { dataType: DataType.Double, value: 2 });
  const l3 = ns.addFolder(l2, { nodeId: "s=Deep.Level2.Level3", browseName: "Level3" });
  addIn(ns, l3, "s=Deep.Level2.Level3.Value", "Value", "Double", { dataType: DataType.Double, value: 3 });

  const bulk = ns.addFolder(folder, { nodeId: "s=Bulk", browseName: "Bulk" });
  for (let i = 0; i < o.bulk; i++) {
    addIn(ns, bulk, "s=Bulk." + i, "B" + i, "Double", { dataType: DataType.Double, value: i + 0.5 });
  }

  for (let i = 0; i < o.extraNamespaces; i++) addressSpace.registerNamespace("urn:tagpipe:extra:" + i);
  const peer = addressSpace.registerNamespace("urn:tagpipe:peer");
  const peerFolder = peer.addFolder(addressSpace.rootFolder.objects, { nodeId: "s=PeerNS", browseName: "PeerNS" });
  const sine2 = addIn(peer, peerFolder, "s=Sine", "Sine", "Double", getter(DataType.Double, "sine"));
  const fast2 = addIn(peer, peerFolder, "s=FastCounter", "FastCounter", "UInt32", getter(DataType.UInt32, "fast"));
  addIn(peer, peerFolder, "i=2001", "Int32Const", "Int32", { dataType: DataType.Int32, value: 2001 });

  const start = Date.now();
  const tick = setInterval(() => {
    state.sine = Math.sin((2 * Math.PI * (Date.now() - start)) / 10000);
    state.fast += 1;
    for (const v of [sine, analog, fast, sine2, fast2]) v.touchValue();
  }, o.periodMs);
  const slow = setInterval(() => {
    state.counter += 1;
    state.toggle = !state.toggle;
    counter.touchValue();
    toggle.touchValue();
  }, 1000);

  await server.start();
  if (o.hideLimits) {
    const zero = { get: () => new Variant({ dataType: DataType.UInt32, value: 0 }) };
    for (const id of ["i=11705", "i=11714"]) { // MaxNodesPerRead, MaxMonitoredItemsPerCall
      const v = addressSpace.findNode(id);
      if (v) v.bindVariable(zero, true);
    }
  }
  const port = server.endpoints[0].port;
  const host = o.host.includes(":") ? `[${o.host}]` : o.host;
  console.log(`READY opc.tcp://${host}:${port}`);

  const stop = async () => {
    clearInterval(tick);
    clearInterval(slow);
    await server.shutdown(0);
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
