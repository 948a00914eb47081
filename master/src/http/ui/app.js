// The master's web UI: polls /state every second and draws the cluster; `#/tasks/<id>` shows
// one task and follows its output through /tasks/<id>/output/{stdout,stderr}.
//
// Everything shown comes from peers (hostnames, names, messages, output), so the DOM is built
// with createElement and textContent only: data is never parsed as HTML anywhere in this file.
"use strict";

const POLL_MS = 1000;
/** Bytes asked per output read (the master answers at most 512 KiB). */
const OUTPUT_CHUNK = 256 * 1024;
/** Output kept on the page per stream; older text is dropped from the top. */
const OUTPUT_KEEP = 1024 * 1024;
/** Rows drawn in the task table at most (the filters narrow it). */
const TASK_ROWS = 500;
/** Rows drawn in the agent table at most. */
const AGENT_ROWS = 500;

let last = null; // the latest /state
let lastOk = null; // when it came

// ---- small helpers ----------------------------------------------------------------------

/** An element with `attrs` (className, title, href, data-*) and children (nodes or text). */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "className") e.className = v;
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function $(id) {
  return document.getElementById(id);
}

function setRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function fmtBytes(n) {
  if (n === undefined || n === null) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return (i === 0 || v >= 100 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

function fmtCpus(c) {
  return (Math.round(c * 100) / 100).toString();
}

function fmtShare(s) {
  return s === undefined || s === null || !isFinite(s) ? "—" : s.toFixed(2);
}

function fmtTime(ms) {
  if (ms === undefined || ms === null) return "—";
  const d = new Date(ms);
  const today = new Date();
  const hms = d.toLocaleTimeString([], { hour12: false });
  return d.toDateString() === today.toDateString() ? hms : d.toLocaleDateString() + " " + hms;
}

function fmtDuration(ms) {
  if (ms === undefined || ms === null || ms < 0) return "";
  if (ms < 1000) return "under 1 s";
  const s = Math.round(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

/** How long ago `ms` was, by this browser's clock ("just now" within a few seconds or when
 * the clocks disagree), or the time itself past an hour. */
function fmtAgo(ms) {
  if (ms === undefined || ms === null) return "—";
  const ago = Date.now() - ms;
  if (ago < 5000) return "just now";
  if (ago < 3600 * 1000) return fmtDuration(ago) + " ago";
  return fmtTime(ms);
}

/** `TASK_RUNNING` → `RUNNING`. */
function stateName(s) {
  return String(s || "").replace(/^TASK_/, "");
}

function stateBadge(s) {
  return el("span", { className: "state " + String(s).replace(/[^A-Z_]/g, "") }, stateName(s));
}

const ENDED = new Set([
  "TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_LOST", "TASK_ERROR",
  "TASK_DROPPED", "TASK_GONE", "TASK_GONE_BY_OPERATOR",
]);

function isEnded(t) {
  return t.completed || ENDED.has(t.state);
}

/** The address of task `id`'s page; with its framework, since ids are unique per framework. */
function taskHref(id, framework) {
  const q = framework ? "?framework=" + encodeURIComponent(framework) : "";
  return "#/tasks/" + encodeURIComponent(id) + q;
}

// ---- a bar: parts of a whole --------------------------------------------------------------

/** A bar of `total` with stacked `parts` ([class, amount]) and optional markers. */
function bar(total, parts, opts) {
  const b = el("span", { className: "bar" });
  let left = 0;
  for (const [cls, amount] of parts) {
    const w = total > 0 ? Math.max(0, Math.min(100 - left, (amount / total) * 100)) : 0;
    if (w > 0) b.appendChild(el("span", { className: "seg " + cls, style: `left:${left}%;width:${w}%` }));
    left += w;
  }
  if (opts && opts.reserved > 0 && total > 0) {
    const w = Math.min(100, (opts.reserved / total) * 100);
    b.appendChild(el("span", { className: "seg reserved", style: `left:0;width:${w}%` }));
  }
  if (opts && opts.marker !== undefined && opts.marker !== null && total > 0) {
    const at = Math.min(99.5, (opts.marker / total) * 100);
    b.appendChild(el("span", { className: "seg fair", style: `left:${at}%` }));
  }
  if (opts && opts.title) b.title = opts.title;
  return b;
}

function resourceBar(a, key, fmt) {
  const total = a.total[key];
  const used = a.used[key];
  const offered = a.offered[key];
  const reserved = a.reserved[key];
  const free = Math.max(0, total - used - offered);
  const title = `used ${fmt(used)}, offered ${fmt(offered)}, free ${fmt(free)}, reserved ${fmt(reserved)} of ${fmt(total)}`;
  return el("span", {},
    bar(total, [["used", used], ["offered", offered]], { reserved, title }),
    el("span", { className: "bar-text" }, `${fmt(used)} / ${fmt(total)}`));
}

// ---- fair shares ----------------------------------------------------------------------------

/** Each role's fair share: from /state when it says, else weight over the weights of roles
 * that have frameworks. */
function roleFairShares(s) {
  const active = s.roles.filter((r) => r.frameworks > 0);
  const sum = active.reduce((a, r) => a + r.weight, 0);
  const out = new Map();
  for (const r of s.roles) {
    let f = r.fair_share;
    if (f === undefined || f === null) f = r.frameworks > 0 && sum > 0 ? r.weight / sum : 0;
    out.set(r.name, f);
  }
  return out;
}

function frameworkFairShare(f, s, roleFair) {
  if (f.fair_share !== undefined && f.fair_share !== null) return f.fair_share;
  const role = s.roles.find((r) => r.name === f.role);
  const n = role && role.frameworks > 0 ? role.frameworks : 1;
  return (roleFair.get(f.role) || 0) / n;
}

function shareCell(share, fair) {
  return el("td", { className: "share" },
    bar(1, [["used", share]], { marker: fair, title: `dominant share ${fmtShare(share)}, fair share ${fmtShare(fair)}` }),
    el("span", { className: "bar-text" }, `${fmtShare(share)} / ${fmtShare(fair)}`));
}

// ---- the overview ---------------------------------------------------------------------------

function total(label, value, sub) {
  return el("div", { className: "total" },
    el("div", { className: "label" }, label),
    el("div", { className: "value" }, value),
    sub ? el("div", { className: "sub" }, sub) : null);
}

function drawTotals(s) {
  const connected = s.agents.filter((a) => a.connected).length;
  const fwConnected = s.frameworks.filter((f) => f.connected).length;
  const used = s.agents.reduce((acc, a) => {
    acc.cpus += a.connected ? a.used.cpus : 0;
    acc.mem += a.connected ? a.used.mem_bytes : 0;
    return acc;
  }, { cpus: 0, mem: 0 });
  const byState = new Map();
  for (const t of s.tasks) byState.set(t.state, (byState.get(t.state) || 0) + 1);
  const live = s.tasks.filter((t) => !isEnded(t)).length;
  const states = [...byState.entries()].sort().map(([k, n]) => `${stateName(k).toLowerCase()} ${n}`).join(", ");
  $("totals").replaceChildren(
    total("agents", `${connected}`, `${s.agents.length} registered`),
    total("frameworks", `${fwConnected}`, `${s.frameworks.length} subscribed`),
    total("tasks live", `${live}`, states || "none"),
    total("cpus used", `${fmtCpus(used.cpus)} / ${fmtCpus(s.total.cpus)}`,
      s.total.cpus > 0 ? `${Math.round((used.cpus / s.total.cpus) * 100)}%` : ""),
    total("memory used", `${fmtBytes(used.mem)} / ${fmtBytes(s.total.mem_bytes)}`,
      s.total.mem_bytes > 0 ? `${Math.round((used.mem / s.total.mem_bytes) * 100)}%` : ""),
    total("offers", `${s.offers.length}`, "outstanding"));
}

function drawAgents(s) {
  $("agents-count").textContent = s.agents.length > AGENT_ROWS
    ? `(${AGENT_ROWS} of ${s.agents.length} shown)`
    : `(${s.agents.length})`;
  setRows($("agents").tBodies[0], s.agents.slice(0, AGENT_ROWS).map((a) => {
    const state = !a.connected ? "disconnected" : a.leaving ? "leaving" : "connected";
    const attrs = Object.entries(a.attributes || {}).map(([k, v]) => `${k}=${v}`);
    if (a.datasets && a.datasets.length) attrs.push("data: " + a.datasets.join(", "));
    const seen = a.last_seen_ms !== undefined && a.last_seen_ms !== null
      ? fmtAgo(a.last_seen_ms)
      : a.connected ? "now" : "—";
    return el("tr", { className: a.connected ? "" : "gone", "data-agent": a.hostname, title: a.id },
      el("td", {}, a.hostname),
      el("td", { className: a.connected && !a.leaving ? "ok" : "bad" }, state),
      el("td", {}, resourceBar(a, "cpus", fmtCpus)),
      el("td", {}, resourceBar(a, "mem_bytes", fmtBytes)),
      el("td", { className: "num" }, a.tasks),
      el("td", {}, seen),
      el("td", {}, attrs.join("; ")));
  }));
}

function drawShares(s) {
  const roleFair = roleFairShares(s);
  $("frameworks-count").textContent = `(${s.frameworks.length})`;
  setRows($("frameworks").tBodies[0], s.frameworks.map((f) => {
    const tasks = Object.entries(f.tasks_by_state || {}).map(([k, n]) => `${stateName(k).toLowerCase()} ${n}`);
    return el("tr", { className: f.connected ? "" : "gone", "data-framework": f.name, title: f.id },
      el("td", {}, f.name, f.suppressed ? el("span", { className: "note" }, " (suppressed)") : null),
      el("td", {}, f.role),
      el("td", {}, f.principal),
      shareCell(f.dominant_share, frameworkFairShare(f, s, roleFair)),
      el("td", { className: "num" }, f.offers_held),
      el("td", {}, tasks.join(", ")));
  }));
  $("roles-count").textContent = `(${s.roles.length})`;
  setRows($("roles").tBodies[0], s.roles.map((r) =>
    el("tr", { "data-role": r.name },
      el("td", {}, r.name),
      el("td", { className: "num" }, r.weight),
      el("td", { className: "num" }, r.frameworks),
      shareCell(r.share, roleFair.get(r.name)),
      el("td", {}, r.guarantee.cpus > 0 || r.guarantee.mem_bytes > 0
        ? `${fmtCpus(r.guarantee.cpus)} cpus, ${fmtBytes(r.guarantee.mem_bytes)}` : "—"))));
}

/** The task table's filters; the overview's address carries them (`#/?state=..&q=..`), so a
 * filtered view can be bookmarked or shared. */
const filters = { framework: "", state: "", q: "" };

function filtersFromHash() {
  const m = /^#\/\?(.*)$/.exec(location.hash);
  const p = new URLSearchParams(m ? m[1] : "");
  filters.framework = p.get("framework") || "";
  filters.state = p.get("state") || "";
  filters.q = p.get("q") || "";
  $("filter-text").value = filters.q;
}

function filtersToHash() {
  filters.framework = $("filter-framework").value;
  filters.state = $("filter-state").value;
  filters.q = $("filter-text").value;
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) p.set(k, v);
  const q = p.toString();
  history.replaceState(null, "", q ? "#/?" + q : "#/");
  draw();
}

/** Keeps a select's options equal to `values` ([value, label]) after its fixed ones, with
 * `value` selected (added when the data has no such option). */
function syncOptions(select, fixed, values, value) {
  const want = fixed.concat(values);
  if (value && !want.some(([v]) => v === value)) want.push([value, value]);
  const have = [...select.options].map((o) => o.value + "\u0000" + o.textContent);
  if (have.join("\u0001") !== want.map(([v, l]) => v + "\u0000" + l).join("\u0001")) {
    select.replaceChildren(...want.map(([v, l]) => el("option", { value: v }, l)));
  }
  select.value = value;
}

function drawTasks(s) {
  const fwName = new Map(s.frameworks.map((f) => [f.id, f.name]));
  const host = new Map(s.agents.map((a) => [a.id, a.hostname]));
  syncOptions($("filter-framework"), [["", "all"]],
    s.frameworks.map((f) => {
      const twins = s.frameworks.filter((g) => g.name === f.name).length > 1;
      return [f.id, twins ? `${f.name} (${f.id})` : f.name];
    }), filters.framework);
  const states = [...new Set(s.tasks.map((t) => t.state))].sort();
  syncOptions($("filter-state"), [["", "all"], ["live", "live"], ["ended", "ended"]],
    states.map((st) => [st, stateName(st).toLowerCase()]), filters.state);

  const fw = filters.framework;
  const st = filters.state;
  const text = filters.q.trim().toLowerCase();
  const shown = s.tasks.filter((t) => {
    if (fw && t.framework_id !== fw) return false;
    if (st === "live" && isEnded(t)) return false;
    if (st === "ended" && !isEnded(t)) return false;
    if (st && st !== "live" && st !== "ended" && t.state !== st) return false;
    if (text) {
      const hay = [t.id, t.name, t.state, fwName.get(t.framework_id) || t.framework_id,
        host.get(t.agent_id) || t.agent_id, t.reason || "", t.message || ""].join(" ").toLowerCase();
      if (!hay.includes(text)) return false;
    }
    return true;
  });
  // Live first (as /state lists them), then the most recently completed first.
  const live = shown.filter((t) => !t.completed);
  const done = shown.filter((t) => t.completed).reverse();
  const rows = live.concat(done);
  $("tasks-count").textContent = `(${shown.length} of ${s.tasks.length})`;
  setRows($("tasks").tBodies[0], rows.slice(0, TASK_ROWS).map((t) => {
    const why = [t.reason, t.message].filter((x) => x).join(": ");
    return el("tr", { "data-task": t.id, className: isEnded(t) ? "ended" : "" },
      el("td", {}, stateBadge(t.state)),
      el("td", {}, el("a", { href: taskHref(t.id, t.framework_id) }, t.id)),
      el("td", {}, t.name),
      el("td", { title: t.framework_id }, fwName.get(t.framework_id) || t.framework_id),
      el("td", { title: t.agent_id }, host.get(t.agent_id) || t.agent_id),
      el("td", { className: "num" }, fmtCpus(t.resources.cpus)),
      el("td", { className: "num" }, fmtBytes(t.resources.mem_bytes)),
      el("td", {}, fmtTime(t.started_at_ms)),
      el("td", {}, fmtTime(t.ended_at_ms)),
      el("td", {}, why));
  }));
  const more = $("tasks-more");
  more.hidden = rows.length <= TASK_ROWS;
  more.textContent = `${rows.length - TASK_ROWS} more not shown: narrow the filters.`;
}

// ---- one task -------------------------------------------------------------------------------

/** The viewed task from the location's hash (`#/tasks/<id>[?framework=<id>]`) as
 * `{id, framework}` (framework "" when not named), or null on the overview. */
function viewedTask() {
  const m = /^#\/tasks\/([^?]+)(?:\?(.*))?$/.exec(location.hash);
  if (!m) return null;
  let id = m[1];
  try {
    id = decodeURIComponent(m[1]);
  } catch (_) { /* kept as written */ }
  return { id, framework: new URLSearchParams(m[2] || "").get("framework") || "" };
}

function drawTask(s, view) {
  const id = view.id;
  $("task-title").textContent = id;
  const t = s
    ? s.tasks.find((x) => x.id === id && (!view.framework || x.framework_id === view.framework))
    : null;
  const dl = $("task-details");
  if (!t) {
    $("task-state").replaceChildren();
    dl.replaceChildren(el("dt", {}, "task"), el("dd", {}, s ? "not in the master's books (unknown, or completed long ago)" : "waiting for the master…"));
    return;
  }
  $("task-state").replaceChildren(stateBadge(t.state));
  const f = s.frameworks.find((x) => x.id === t.framework_id);
  const a = s.agents.find((x) => x.id === t.agent_id);
  const rows = [
    ["id", t.id],
    ["name", t.name],
    ["state", stateName(t.state) + (t.completed ? " (completed)" : "")],
    ["framework", f ? `${f.name} (${t.framework_id}), role ${f.role}` : t.framework_id],
    ["agent", a ? `${a.hostname} (${t.agent_id})` : t.agent_id],
    ["resources", `${fmtCpus(t.resources.cpus)} cpus, ${fmtBytes(t.resources.mem_bytes)} memory, ${fmtBytes(t.resources.disk_bytes)} disk`],
    ["reason", t.reason || "—"],
    ["message", t.message || "—"],
  ];
  if (t.launched_at_ms !== undefined) rows.push(["launched", fmtTime(t.launched_at_ms)]);
  if (t.started_at_ms !== undefined) rows.push(["started", fmtTime(t.started_at_ms)]);
  if (t.ended_at_ms !== undefined) rows.push(["ended", fmtTime(t.ended_at_ms)]);
  if (t.started_at_ms) {
    const end = t.ended_at_ms || Date.now();
    rows.push([t.ended_at_ms ? "ran for" : "running for", fmtDuration(end - t.started_at_ms)]);
  }
  dl.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

/** Follows one output stream of one task: reads from its offset, decodes UTF-8 across
 * chunk boundaries, stops once the task ended and everything was read. */
class Follower {
  constructor(view, stream) {
    this.task = view.id;
    this.framework = view.framework;
    this.stream = stream;
    this.pre = $(stream);
    this.size = $(stream + "-size");
    this.offset = 0;
    this.decoder = new TextDecoder("utf-8");
    this.done = false;
    this.busy = false;
    /** After a refusal, when to ask again (Date.now() ms). */
    this.retryAt = 0;
    this.pre.replaceChildren();
    this.size.textContent = "";
    this.text = document.createTextNode("");
    this.pre.appendChild(this.text);
  }

  note(msg) {
    const n = this.pre.querySelector(".note") || this.pre.appendChild(el("span", { className: "note" }));
    n.textContent = msg;
  }

  clearNote() {
    const n = this.pre.querySelector(".note");
    if (n) n.remove();
  }

  append(s) {
    if (!s) return;
    const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 4;
    let v = this.text.data + s;
    if (v.length > OUTPUT_KEEP) v = "…\n" + v.slice(v.length - OUTPUT_KEEP);
    this.text.data = v;
    if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
  }

  async poll() {
    if (this.done || this.busy || Date.now() < this.retryAt) return;
    this.busy = true;
    try {
      for (let round = 0; round < 16 && !this.done; round++) {
        let url = `/tasks/${encodeURIComponent(this.task)}/output/${this.stream}?offset=${this.offset}&length=${OUTPUT_CHUNK}`;
        if (this.framework) url += "&framework=" + encodeURIComponent(this.framework);
        const r = await fetch(url, { cache: "no-store" });
        if (!r.ok) {
          // One line of text saying why (JSON on a standby).
          let why = (await r.text().catch(() => "")).trim();
          try {
            const j = JSON.parse(why);
            why = j.error || (j.status === "standby" ? "this master is a standby" : why);
          } catch (_) { /* plain text */ }
          why = why.split("\n")[0].slice(0, 300) || `${r.status} ${r.statusText}`;
          this.note(r.status === 404 ? `no output (${why})` : `cannot read output: ${why}`);
          // Refusals (bad request, not allowed, unknown, ambiguous) are asked again rarely.
          this.retryAt = Date.now() + (r.status >= 400 && r.status < 500 ? 10000 : 2000);
          return;
        }
        this.clearNote();
        const size = Number(r.headers.get("x-tessera-output-size"));
        const ended = r.headers.get("x-tessera-task-ended") === "true";
        const body = new Uint8Array(await r.arrayBuffer());
        this.append(this.decoder.decode(body, { stream: true }));
        this.offset += body.byteLength;
        if (Number.isFinite(size)) {
          this.size.textContent = `(${fmtBytes(size)})`;
          // Far behind: jump to the last OUTPUT_KEEP bytes rather than read everything.
          if (size - this.offset > OUTPUT_KEEP) {
            this.append(this.decoder.decode());
            this.append(`\n… ${fmtBytes(size - OUTPUT_KEEP - this.offset)} skipped …\n`);
            this.offset = size - OUTPUT_KEEP;
            this.decoder = new TextDecoder("utf-8");
            continue;
          }
        }
        const caughtUp = body.byteLength === 0 || !Number.isFinite(size) || this.offset >= size;
        if (caughtUp) {
          if (ended) {
            this.append(this.decoder.decode());
            this.done = true;
            if (this.offset === 0) this.note("(empty)");
          }
          return;
        }
      }
    } catch (e) {
      this.note(`cannot read output: ${e}`);
    } finally {
      this.busy = false;
    }
  }
}

let followers = null; // [stdout, stderr] of the viewed task

function route() {
  const view = viewedTask();
  $("overview").hidden = view !== null;
  $("task-view").hidden = view === null;
  if (view === null) {
    followers = null;
    filtersFromHash();
  } else if (!followers || followers[0].task !== view.id || followers[0].framework !== view.framework) {
    followers = [new Follower(view, "stdout"), new Follower(view, "stderr")];
  }
  draw();
  if (followers) followers.forEach((f) => f.poll());
}

// ---- polling --------------------------------------------------------------------------------

function banner(msg) {
  const b = $("banner");
  b.hidden = !msg;
  b.textContent = msg || "";
}

function draw() {
  const view = viewedTask();
  if (view !== null) {
    drawTask(last, view);
    return;
  }
  if (!last) return;
  drawTotals(last);
  drawAgents(last);
  drawShares(last);
  drawTasks(last);
}

async function poll() {
  const began = performance.now();
  try {
    const r = await fetch("/state", { cache: "no-store" });
    if (r.status === 503) {
      const j = await r.json().catch(() => ({}));
      if (j.status === "standby") {
        banner(j.leader ? `standby, leader is ${j.leader}` : "standby, leader unknown");
        last = null;
        for (const t of ["agents", "frameworks", "roles", "tasks"]) setRows($(t).tBodies[0], []);
        $("totals").replaceChildren();
      } else {
        banner("the master is busy; retrying");
      }
      $("status").textContent = j.status || "unavailable";
    } else if (!r.ok) {
      throw new Error(`${r.status} ${r.statusText}`);
    } else {
      last = await r.json();
      lastOk = new Date();
      banner(null);
      $("allocator").textContent = `allocator: ${last.allocator}`;
      $("status").textContent = `updated ${lastOk.toLocaleTimeString([], { hour12: false })}`;
      $("status").classList.remove("stale");
    }
  } catch (e) {
    $("status").textContent = lastOk
      ? `unreachable (last update ${lastOk.toLocaleTimeString([], { hour12: false })})`
      : `unreachable: ${e.message || e}`;
    $("status").classList.add("stale");
  }
  draw();
  if (followers) followers.forEach((f) => f.poll());
  // Every second; on a cluster so big that reading and drawing it takes long, at least twice
  // that long, so the page never spends most of its time (or the master's) on itself.
  setTimeout(poll, Math.max(POLL_MS, 2 * (performance.now() - began)));
}

window.addEventListener("hashchange", route);
for (const id of ["filter-framework", "filter-state", "filter-text"]) {
  $(id).addEventListener("input", filtersToHash);
}
route();
poll();
