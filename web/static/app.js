// The device page: it polls /api/overview and /api/devices (and /api/devices/NAME while a
// detail is open) every refresh interval, and redraws the rows without a reload. The view
// (search, state, sort, page, open device) lives in the URL's fragment, so that a reload or a
// shared link keeps it. Every text from the agent goes in with textContent, never as HTML.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const STATES = ["failing", "breaker open", "half-open", "stale", "starting", "ok", "remote"];
  const LABEL = { remote: "polled by another agent" };
  const view = { q: "", state: "", sort: "", desc: false, page: 1, limit: 100, open: "", openInput: "" };
  let refreshMs = 2000, timer = 0, seq = 0, pages = 1;

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    view.q = p.get("q") || "";
    view.state = p.get("state") || "";
    view.sort = p.get("sort") || "";
    view.desc = p.get("desc") === "1";
    view.page = Math.max(1, parseInt(p.get("page") || "1", 10) || 1);
    view.limit = parseInt(p.get("limit") || "100", 10) || 100;
    view.open = p.get("open") || "";
    view.openInput = p.get("input") || "";
  }
  function writeHash() {
    const p = new URLSearchParams();
    if (view.q) p.set("q", view.q);
    if (view.state) p.set("state", view.state);
    if (view.sort) p.set("sort", view.sort);
    if (view.desc) p.set("desc", "1");
    if (view.page > 1) p.set("page", String(view.page));
    if (view.limit !== 100) p.set("limit", String(view.limit));
    if (view.open) { p.set("open", view.open); p.set("input", view.openInput); }
    history.replaceState(null, "", "#" + p.toString());
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    if (attrs) for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function td(text, cls) { return el("td", cls ? { class: cls } : null, text); }
  function slug(s) { return s.replace(/ /g, "-"); }
  function num(n) { return n === null || n === undefined ? "" : Number(n).toLocaleString("en"); }
  function msText(v) { return v === null || v === undefined ? "–" : v < 10 ? v.toFixed(2) + " ms" : v < 1000 ? v.toFixed(1) + " ms" : (v / 1000).toFixed(2) + " s"; }
  function ago(s) {
    if (s === null || s === undefined) return "never";
    if (s < 60) return s.toFixed(1) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 172800) return (s / 3600).toFixed(1) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }
  function since(t, now) { return t ? ago((Date.parse(now) - Date.parse(t)) / 1000) : "never"; }
  function bytes(n) {
    if (n < 0) return "memory";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }
  function stateBadge(s) { return el("span", { class: "st st-" + slug(s) }, s); }

  // spark draws the round trips as a line; a request without an answer is a red tick.
  function spark(rtts) {
    const NS = "http://www.w3.org/2000/svg", W = 120, H = 18;
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("class", "spark"); svg.setAttribute("width", W); svg.setAttribute("height", H);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    if (!rtts || !rtts.length) return svg;
    let max = 0;
    for (const v of rtts) if (v !== null && v > max) max = v;
    const step = W / Math.max(rtts.length - 1, 1);
    let pts = [];
    const flush = () => {
      if (pts.length) {
        const pl = document.createElementNS(NS, "polyline");
        pl.setAttribute("points", pts.length === 1 ? pts[0] + " " + pts[0] : pts.join(" "));
        svg.appendChild(pl); pts = [];
      }
    };
    rtts.forEach((v, i) => {
      const x = (i * step).toFixed(1);
      if (v === null) {
        flush();
        const ln = document.createElementNS(NS, "line");
        ln.setAttribute("x1", x); ln.setAttribute("x2", x); ln.setAttribute("y1", H - 5); ln.setAttribute("y2", H);
        svg.appendChild(ln);
        return;
      }
      pts.push(x + "," + (H - 1 - (max ? v / max : 0) * (H - 2)).toFixed(1));
    });
    flush();
    return svg;
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error(url.split("?")[0] + ": " + r.status + " " + (await r.text()).trim());
    return r.json();
  }

  function drawOverview(o) {
    refreshMs = o.refresh_ms || refreshMs;
    const a = o.agent;
    const cpu = o.cpu_percent === null ? "…" : o.cpu_percent.toFixed(1) + "%";
    $("agent").textContent = "version " + a.version + " · up " + ago(o.uptime_s).replace(" ago", "") +
      " · CPU " + cpu + " · RSS " + bytes(o.rss_bytes) + (a.running ? "" : " · not running (starting or reloading)");
    const tb = $("outputs").tBodies[0];
    const rows = o.outputs.map((out) => {
      const tr = el("tr");
      tr.append(td(out.name), td(num(out.buffered) + " / " + num(out.buffer_limit), "num"),
        td(bytes(out.disk_bytes), "num"), td(since(out.last_write, o.now)),
        td(num(out.written), "num"), td(num(out.dropped), "num"), td(num(out.errors), "num"),
        td(out.last_error || "", "err"));
      return tr;
    });
    tb.replaceChildren(...rows);
  }

  function drawCounts(counts) {
    const box = $("counts");
    const sel = new Set(view.state ? view.state.split(",") : []);
    const btns = STATES.map((s) => {
      const b = el("button", { type: "button", "data-state": s, class: sel.has(s) ? "on" : "" });
      const n = el("b", { id: "count-" + slug(s) }, num(counts[s] || 0));
      b.append(n, document.createTextNode(LABEL[s] || s));
      b.addEventListener("click", () => {
        view.state = view.state === s ? "" : s;
        $("state").value = view.state;
        view.page = 1; refresh();
      });
      return b;
    });
    box.replaceChildren(...btns);
  }

  function drawRows(l) {
    pages = l.pages;
    $("pageinfo").textContent = "page " + l.page + " of " + l.pages;
    $("matched").textContent = num(l.matched) + " of " + num(l.total) + " devices";
    $("prev").disabled = l.page <= 1;
    $("next").disabled = l.page >= l.pages;
    drawCounts(l.counts);
    $("inputs").tBodies[0].replaceChildren(...l.inputs.map((i) => {
      const tr = el("tr");
      const by = STATES.filter((s) => i.counts[s]).map((s) => (LABEL[s] || s) + " " + num(i.counts[s])).join(", ");
      tr.append(td(i.name), td(num(i.devices), "num"), td(by));
      return tr;
    }));
    const rows = l.devices.map((d) => {
      const tr = el("tr", { class: "row-" + slug(d.state) });
      tr.dataset.name = d.name; tr.dataset.input = d.input; tr.dataset.state = d.state;
      const st = td(null, "c-state"); st.append(stateBadge(d.state));
      const ctl = td(d.controller + (d.backup ? " (backup " + d.backup + ")" : ""), "c-controller");
      const rtt = td(msText(d.rtt_ms), "num c-rtt");
      rtt.dataset.v = d.rtt_ms === null ? "" : String(d.rtt_ms);
      const kinds = Object.keys(d.errors || {}).filter((k) => d.errors[k]).map((k) => k + " " + d.errors[k]);
      const errs = td(num(d.errors_total), "num c-errors");
      if (kinds.length) errs.title = kinds.join(", ");
      const le = td(d.last_error ? d.last_error + " (" + since(d.error_at, l.now) + ")" : "", "err c-last-error");
      const risk = td(d.disconnect_risk === undefined ? "" : d.disconnect_risk.toFixed(2), "num c-risk" + (d.disconnect_risk >= 1 ? " risk-hi" : ""));
      const sp = td(null, "c-spark"); sp.append(spark(d.rtts_us));
      const tags = Object.keys(d.tags || {}).map((k) => k + "=" + d.tags[k]).join(" ");
      const name = td(d.name, "c-name"); if (tags) name.title = tags;
      tr.append(st, name, td(d.input, "c-input"), ctl, td(ago(d.age_s), "c-age"), rtt,
        td(msText(d.timeout_ms || null), "num c-timeout"), td(num(d.polls) + (d.polls_failed ? " (" + num(d.polls_failed) + " failed)" : ""), "num c-polls"),
        errs, le, risk, td(d.owner || "", "c-owner"), sp);
      tr.addEventListener("click", () => { view.open = d.name; view.openInput = d.input; writeHash(); refreshDetail(); });
      return tr;
    });
    $("rows").replaceChildren(...rows);
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.classList.toggle("asc", th.dataset.sort === view.sort && !view.desc);
      th.classList.toggle("desc", th.dataset.sort === view.sort && view.desc);
    }
  }

  function fillTable(id, rows) {
    $(id).tBodies[0].replaceChildren(...rows.map((cells) => {
      const tr = el("tr");
      for (const c of cells) tr.append(td(c));
      return tr;
    }));
  }

  function drawDetail(d, now) {
    $("detail").hidden = false;
    $("detail-name").textContent = d.name;
    const tags = Object.keys(d.tags || {}).map((k) => k + "=" + d.tags[k]).join(", ");
    $("detail-summary").textContent = d.state + " · " + d.input + " · " + d.controller +
      (d.backup ? " (backup " + d.backup + ")" : " (primary)") + " · last good " + ago(d.age_s) +
      " · RTT " + msText(d.rtt_ms) + " · timeout " + msText(d.timeout_ms) + (tags ? " · " + tags : "") +
      (d.owner ? " · polled by " + d.owner : "");
    const x = d.detail;
    $("detail-values-at").textContent = x.values_at ? "copied by the poll " + since(x.values_at, now) : "the next poll copies the values";
    fillTable("detail-values", x.values.map((v) => [v.measurement, v.field, v.value === null || v.value === undefined ? "–" : typeof v.value === "number" && !Number.isInteger(v.value) ? String(+v.value.toPrecision(7)) : String(v.value), v.quality, v.at ? since(v.at, now) : ""]));
    fillTable("detail-plan", x.plan.map((p) => [p.read, p.fields.join(", "), p.note || ""]));
    fillTable("detail-errors", x.errors.map((e) => [since(e.at, now), String(e.repeats), e.text]));
    fillTable("detail-breaker", x.breaker.map((b) => [since(b.at, now), b.controller, b.to]));
  }

  async function refreshDetail() {
    if (!view.open) { $("detail").hidden = true; return; }
    try {
      const d = await getJSON("api/devices/" + encodeURIComponent(view.open) + "?input=" + encodeURIComponent(view.openInput));
      drawDetail(d, new Date().toISOString());
    } catch (e) {
      $("detail-name").textContent = view.open;
      $("detail-summary").textContent = String(e.message);
      $("detail").hidden = false;
    }
  }

  async function refresh() {
    clearTimeout(timer);
    writeHash();
    const my = ++seq;
    const p = new URLSearchParams({ page: view.page, limit: view.limit });
    if (view.q) p.set("q", view.q);
    if (view.state) p.set("state", view.state);
    if (view.sort) p.set("sort", view.sort);
    if (view.desc) p.set("desc", "1");
    try {
      const [o, l] = await Promise.all([getJSON("api/overview?devices=0"), getJSON("api/devices?" + p)]);
      if (my !== seq) return; // a newer refresh is under way
      drawOverview(o);
      if (l.page > l.pages && view.page > 1) { view.page = l.pages; return refresh(); }
      drawRows(l);
      if (view.open) await refreshDetail();
      const s = $("status");
      s.textContent = "updated " + new Date().toLocaleTimeString();
      s.dataset.n = String((parseInt(s.dataset.n || "0", 10) || 0) + 1);
    } catch (e) {
      if (my === seq) $("status").textContent = "not updated: " + e.message;
    }
    if (my === seq) timer = setTimeout(refresh, refreshMs);
  }

  function init() {
    readHash();
    for (const s of STATES) $("state").append(el("option", { value: s }, LABEL[s] || s));
    $("q").value = view.q;
    $("state").value = view.state;
    $("limit").value = String(view.limit);
    let typing = 0;
    $("q").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => { view.q = $("q").value.trim(); view.page = 1; refresh(); }, 120);
    });
    $("state").addEventListener("change", () => { view.state = $("state").value; view.page = 1; refresh(); });
    $("limit").addEventListener("change", () => { view.limit = parseInt($("limit").value, 10); view.page = 1; refresh(); });
    $("prev").addEventListener("click", () => { if (view.page > 1) { view.page--; refresh(); } });
    $("next").addEventListener("click", () => { if (view.page < pages) { view.page++; refresh(); } });
    $("close").addEventListener("click", () => { view.open = ""; view.openInput = ""; $("detail").hidden = true; writeHash(); });
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => {
        const k = th.dataset.sort;
        if (view.sort === k) view.desc = !view.desc; else { view.sort = k; view.desc = false; }
        view.page = 1; refresh();
      });
    }
    drawCounts({});
    refresh();
  }
  init();
})();
