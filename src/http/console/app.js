// provd console: one server-sent-events stream (/api/console/stream) brings a snapshot of
// the fleet when the boot journal moves (at most one a second); the page renders it. Actions
// go through the admin API with the console's header, after a confirmation.
"use strict";

const STEPS = ["dhcp", "script", "kernel", "kickstart", "%post", "installed"];
let latest = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "-";
}

function duration(s) {
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0");
  return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0");
}

// Which step of the chain one journal entry shows.
function stepOf(e) {
  switch (e.kind) {
    case "dhcp-ack": return "dhcp";
    case "boot-script": return e.action === "install" ? "script" : null;
    case "http-asset": return "kernel";
    case "kickstart": return "kickstart";
    case "callback":
      if (e.event === "post-started") return "%post";
      if (e.event === "installed") return "installed";
      return null;
    default: return null;
  }
}

// When each step was first reached by `mac` in the current install (the journal is
// oldest first; a new boot script starts the chain again).
function progress(mac, events) {
  let reached = {};
  for (const e of events) {
    if (e.mac !== mac) continue;
    const s = stepOf(e);
    if (!s) continue;
    if (s === "script") reached = { dhcp: reached.dhcp };
    if (!(s in reached)) reached[s] = e.at;
  }
  return reached;
}

function steps(host, events, now) {
  const reached = progress(host.mac, events);
  const failed = host.status === "failed";
  const done = host.status === "installed" || host.status === "ready";
  const cells = STEPS.map((s, i) => {
    const at = reached[s] || (done && s === "installed" ? host.updated : null);
    const next = STEPS.slice(i + 1).map((n) => reached[n]).find((t) => t);
    let cls = "step";
    let title = s + ": not yet";
    if (at) {
      cls += " done";
      const until = next || (done || failed ? at : now);
      title = s + " at " + clock(at) + ", " + duration(Math.max(0, until - at)) + " in this step";
    }
    return el("span", { class: cls, title }, s, at ? " " + duration(Math.max(0, (next || (done || failed ? at : now)) - at)) : "");
  });
  if (failed) cells.push(el("span", { class: "step failed" }, "failed"));
  return el("div", { class: "steps" }, cells);
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 6000);
}

async function act(question, method, path) {
  if (!window.confirm(question)) return;
  await send(method, path);
}

// One change through the admin API; the answer (or the refusal's reason) as a toast.
async function send(method, path) {
  try {
    const r = await fetch(path, { method, headers: { "X-Provd-Console": "1" }, credentials: "same-origin" });
    const body = await r.json().catch(() => ({}));
    toast(r.ok ? "done: " + path : "refused: " + (body.error || r.status));
    return r.ok;
  } catch (e) {
    toast("failed: " + e);
    return false;
  }
}

// VMs are asked of the hypervisors' libvirt (not in the journal's snapshot): on load, every
// 10 s, and after each action.
async function refreshVms() {
  try {
    const r = await fetch("/api/vms", { credentials: "same-origin" });
    if (r.ok) renderVms(await r.json());
  } catch (e) {
    /* the stream's badge already says when the server is gone */
  }
}

async function vmAct(v, action) {
  const base = "/api/vms/" + encodeURIComponent(v.host) + "/" + encodeURIComponent(v.name) + "/" + action;
  let path = base;
  if (action === "migrate") {
    const others = (latest ? latest.hypervisors : [])
      .filter((h) => h.site === v.site && h.host !== v.host && h.state === "ready" && !h.drained)
      .map((h) => h.host);
    const to = window.prompt("Migrate " + v.name + " (running on " + v.host + ") live to which hypervisor?", others[0] || "");
    if (!to) return;
    path = base + "?to=" + encodeURIComponent(to);
  } else if (action === "snapshot") {
    const kind = v.state === "running" ? "external, disk only" : "internal";
    const snap = window.prompt("Snapshot " + v.name + " (" + kind + ") as:", "console-" + Math.floor(Date.now() / 1000));
    if (!snap) return;
    path = base + "?snapshot=" + encodeURIComponent(snap);
  } else {
    const what = { start: "Start", shutdown: "Ask the guest to shut down:", "power-off": "Power off at once (no guest shutdown):", reboot: "Ask the guest to reboot:" }[action];
    if (!window.confirm(what + " " + v.name + " on " + v.host + "?")) return;
  }
  await send("POST", path);
  await refreshVms();
}

function renderVms(list) {
  const rows = list.vms
    .sort((a, b) => (a.host + "/" + a.name).localeCompare(b.host + "/" + b.name))
    .map((v) => {
      const running = v.state === "running";
      const buttons = (running ? ["shutdown", "power-off", "reboot", "migrate"] : ["start", "snapshot"])
        .map((a) => el("button", { "data-action": a, onclick: () => vmAct(v, a) }, a));
      const from = v.template ? v.template + (v.template_version ? " v" + v.template_version : "") : "-";
      return el("tr", { "data-vm": v.host + "/" + v.name },
        el("td", {}, v.name), el("td", {}, v.host), el("td", { class: "vm-state" }, v.state),
        el("td", {}, v.vcpus), el("td", {}, v.memory_mib), el("td", { class: "narrow-hide" }, from), el("td", {}, buttons));
    });
  const missing = list.unanswered.map((u) => el("p", { class: "why" }, u.host + " did not answer: " + u.error));
  document.getElementById("vms").replaceChildren(...missing, rows.length ? el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ["VM", "hypervisor", "state", "vcpus", "MiB", "template", "actions"].map((t) =>
      el("th", t === "template" ? { class: "narrow-hide" } : {}, t)))),
    el("tbody", {}, rows))) : el("p", {}, "No VM on a ready hypervisor."));
}

function actions(h) {
  const name = h.hostname || h.mac;
  const enc = encodeURIComponent(name);
  const force = h.status === "installed" || h.status === "ready";
  return [
    el("button", { onclick: () => act(
      (force ? name + " is " + h.status + ": reinstalling may wipe it. " : "") + "Reinstall " + name + " at its next network boot?",
      "POST", "/api/hosts/" + enc + "/reinstall" + (force ? "?force=true" : "")) }, "reinstall"),
    el("button", { onclick: () => act("Turn netboot " + (h.netboot ? "off" : "on") + " for " + name + "?",
      "POST", "/api/hosts/" + enc + "/netboot/" + (h.netboot ? "off" : "on")) }, "netboot " + (h.netboot ? "off" : "on")),
    el("button", { onclick: () => act("Power-cycle " + name + " through its BMC now?",
      "POST", "/api/hosts/" + enc + "/power/cycle") }, "power cycle"),
  ];
}

function renderSummary(s) {
  const by = {};
  for (const h of s.hosts) by[h.status] = (by[h.status] || 0) + 1;
  const cards = [["hosts", s.hosts.length]].concat(Object.entries(by).sort());
  cards.push(["leases bound", s.leases.filter((l) => l.state === "bound").length]);
  document.getElementById("summary").replaceChildren(
    ...cards.map(([k, v]) => el("div", { class: "card" }, el("b", {}, v), k)));
}

function renderFleet(s) {
  const sites = s.sites.map((x) => x.name);
  for (const h of s.hosts) if (h.site && !sites.includes(h.site)) sites.push(h.site);
  if (s.hosts.some((h) => !h.site)) sites.push(null);
  const out = [];
  for (const site of sites) {
    const hosts = s.hosts.filter((h) => (h.site || null) === site);
    if (!hosts.length) continue;
    const rows = hosts
      .sort((a, b) => (a.hostname || a.mac).localeCompare(b.hostname || b.mac))
      .map((h) => {
        const last = h.history.length ? h.history[h.history.length - 1] : null;
        return el("tr", { "data-host": h.hostname || h.mac },
          el("td", {}, h.hostname || "(unknown)", el("br"), el("small", {}, h.mac)),
          el("td", { class: "status-" + h.status }, h.status, h.drained ? " (drained)" : ""),
          el("td", {}, steps(h, s.events, s.at),
            h.status === "failed" && last ? el("div", { class: "why" }, last.what) : null),
          el("td", { class: "narrow-hide" }, last ? clock(last.at) + " " + last.what : ""),
          el("td", {}, actions(h)));
      });
    out.push(el("h3", {}, site ? "site " + site : "no site"),
      el("div", { class: "fleet" }, el("table", {},
        el("thead", {}, el("tr", {}, ["host", "status", "progress", "last", "actions"].map((t) =>
          el("th", t === "last" ? { class: "narrow-hide" } : {}, t)))),
        el("tbody", {}, rows))));
  }
  document.getElementById("fleet").replaceChildren(...(out.length ? out : [el("p", {}, "No host yet.")]));
}

function renderJournal(s) {
  const rows = s.events.slice().reverse().slice(0, 150).map((e) =>
    el("tr", {}, el("td", {}, clock(e.at)), el("td", {}, e.mac || e.ip || "-"), el("td", {}, e.kind), el("td", {}, e.detail)));
  document.querySelector("#journal tbody").replaceChildren(...rows);
}

function renderLeases() {
  if (!latest) return;
  const q = document.getElementById("lease-search").value.trim().toLowerCase();
  const rows = latest.leases
    .filter((l) => !q || [l.ip, l.mac, l.hostname, l.site, l.state].some((v) => v && String(v).toLowerCase().includes(q)))
    .slice(0, 500)
    .map((l) => el("tr", {}, el("td", {}, l.ip), el("td", {}, l.mac || "-"), el("td", {}, l.hostname || "-"),
      el("td", {}, l.state), el("td", { class: "narrow-hide" }, l.site), el("td", { class: "narrow-hide" }, clock(l.ends))));
  document.querySelector("#leases tbody").replaceChildren(...rows);
}

function renderPair(s) {
  const parts = [];
  for (const f of s.failover) {
    parts.push(el("div", { class: "card" }, el("b", {}, f.state),
      "failover " + f.name + " (" + f.role + ", site " + f.site + "): partner " + (f.partner_state || "unknown") +
      (f.connected ? ", connected" : ", not connected") + (f.last_error ? " - " + f.last_error : "")));
  }
  for (const r of s.replication) {
    parts.push(el("div", { class: "card" }, el("b", {}, r.connected ? "synced" : "apart"),
      "replication site " + r.site + " with " + r.partner + (r.last_sync ? ", last sync " + clock(r.last_sync) : "") +
      (r.last_error ? " - " + r.last_error : "")));
  }
  document.getElementById("pair").replaceChildren(...(parts.length ? parts : [el("p", {}, "This server has no failover partner.")]));
}

function renderHypervisors(s) {
  if (!s.hypervisors.length) {
    document.getElementById("hypervisors").replaceChildren(el("p", {}, "No installed host has been checked yet."));
    return;
  }
  const rows = s.hypervisors.map((h) => {
    const c = h.capacity || {};
    return el("tr", {}, el("td", {}, h.host), el("td", {}, h.site), el("td", {}, h.drained ? "drained" : h.status || "?"),
      el("td", {}, h.state), el("td", {}, c.cpus ?? "-"), el("td", {}, c.free_memory_mib ?? "-"),
      el("td", {}, (c.running || []).join(", ") || "-"), el("td", {}, h.reason || ""));
  });
  document.getElementById("hypervisors").replaceChildren(el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ["host", "site", "status", "pool", "cpus", "free MiB", "VMs", "why"].map((t) => el("th", {}, t)))),
    el("tbody", {}, rows))));
}

function render(s) {
  latest = s;
  renderSummary(s);
  renderFleet(s);
  renderJournal(s);
  renderLeases();
  renderPair(s);
  renderHypervisors(s);
  document.getElementById("updated").textContent = "as of " + clock(s.at);
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/console/stream");
  source.addEventListener("snapshot", (m) => {
    live.textContent = "live";
    live.className = "badge on";
    render(JSON.parse(m.data));
  });
  // The server ends the stream when the credential it was opened with lapses (sign-out,
  // expiry, revocation): stop, and reload to the sign-in page.
  source.addEventListener("ended", (m) => {
    source.close();
    live.textContent = "signed out: " + m.data;
    live.className = "badge off";
    setTimeout(() => location.reload(), 1500);
  });
  source.onerror = () => {
    live.textContent = "reconnecting";
    live.className = "badge off";
  };
}

document.getElementById("lease-search").addEventListener("input", renderLeases);
connect();
refreshVms();
setInterval(refreshVms, 10000);
