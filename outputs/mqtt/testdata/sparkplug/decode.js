// Decodes Sparkplug B payloads with Eclipse Tahu's own JavaScript decoder (npm
// sparkplug-payload, pinned in package.json): a decoder tagpipe did not write.
//
// stdin: one message a line, "<topic as hex> <payload as hex>".
// stdout: one JSON object a line, {"topic": ..., "payload": ...}; 64-bit numbers (Long) as
// decimal strings. STATE payloads are JSON already and are passed through as "state".
//
// With --encode-rebirth it prints instead, as hex, Tahu's encoding of the NCMD payload
// {"Node Control/Rebirth": true} that a host sends to ask for a rebirth.
"use strict";
const sparkplug = require("sparkplug-payload").get("spBv1.0");
const readline = require("readline");

if (process.argv.includes("--encode-rebirth")) {
  const payload = sparkplug.encodePayload({
    timestamp: Date.now(),
    metrics: [{ name: "Node Control/Rebirth", type: "Boolean", value: true }],
  });
  process.stdout.write(Buffer.from(payload).toString("hex") + "\n");
  process.exit(0);
}

function plain(v) {
  if (v === null || typeof v !== "object") return v;
  if (typeof v.low === "number" && typeof v.high === "number" && "unsigned" in v && typeof v.toString === "function") {
    return v.toString();
  }
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return Buffer.from(v).toString("hex");
  if (Array.isArray(v)) return v.map(plain);
  const out = {};
  for (const k of Object.keys(v)) out[k] = plain(v[k]);
  return out;
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  const [topicHex, payloadHex] = line.trim().split(" ");
  if (!topicHex) return;
  const topic = Buffer.from(topicHex, "hex").toString("utf8");
  const bytes = Buffer.from(payloadHex || "", "hex");
  if (topic.startsWith("spBv1.0/STATE/")) {
    process.stdout.write(JSON.stringify({ topic, state: bytes.toString("utf8") }) + "\n");
    return;
  }
  let payload;
  try {
    payload = plain(sparkplug.decodePayload(bytes));
  } catch (e) {
    process.stdout.write(JSON.stringify({ topic, error: String(e) }) + "\n");
    return;
  }
  process.stdout.write(JSON.stringify({ topic, payload }) + "\n");
});
