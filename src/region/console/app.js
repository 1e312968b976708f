// The region's console: every site's health and hosts, read from the region's API every
// 5 s, with a site filter; a reinstall asks first and goes to the owning site through the
// region (the answer shown is that site's). No framework, no build step.
"use strict";

const state = { sites: [], hosts: [], filter: "", search: "" };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function ago(secs) {
  if (secs === null || secs === undefined) return "never";
  if (secs < 60) return secs + " s ago";
  if (secs < 3600) return Math.floor(secs / 60) + " min ago";
  return Math.floor(secs / 3600) + " h ago";
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.hidden = false;
  setTimeout(() => { t.hidden = true; }, 6000);
}

async function get(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) { location.reload(); throw new Error("signed out"); }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function renderSites() {
  const body = document.querySelector("#sites tbody");
  body.replaceChildren();
  const select = document.getElementById("site-filter");
  const known = new Set([...select.options].map(o => o.value));
  for (const s of state.sites) {
    if (!known.has(s.name)) select.append(new Option(s.name, s.name));
    if (state.filter && s.name !== state.filter) continue;
    const tr = el("tr");
    tr.dataset.site = s.name;
    tr.append(el("td", s.name));
    const health = el("td");
    health.append(el("span", s.health, "badge " + (s.health === "fresh" ? "on" : "off")));
    tr.append(health);
    tr.append(el("td", ago(s.age_secs)));
    tr.append(el("td", s.reached || "-"));
    tr.append(el("td", s.hosts));
    tr.append(el("td", s.hypervisors_ready + " / " + s.hypervisors));
    tr.append(el("td", s.leases.bound));
    tr.append(el("td", s.crl_number == null ? "-" : String(s.crl_number), "crl"));
    tr.append(el("td", s.error || "", "why"));
    body.append(tr);
  }
}

function renderHosts() {
  const body = document.querySelector("#hosts tbody");
  body.replaceChildren();
  const q = state.search.toLowerCase();
  for (const h of state.hosts) {
    const r = h.host;
    if (state.filter && h.site !== state.filter) continue;
    const text = [r.hostname, r.mac, r.status].join(" ").toLowerCase();
    if (q && !text.includes(q)) continue;
    const tr = el("tr");
    tr.dataset.host = r.hostname || r.mac;
    tr.append(el("td", h.site));
    tr.append(el("td", r.hostname || "-"));
    tr.append(el("td", r.mac));
    tr.append(el("td", r.status, "status-" + r.status));
    tr.append(el("td", r.netboot ? "on" : "off"));
    tr.append(el("td", h.health));
    const act = el("td");
    if (r.hostname) {
      const b = el("button", "reinstall");
      b.onclick = () => reinstall(h.site, r.hostname, r.status);
      act.append(b);
    }
    tr.append(act);
    body.append(tr);
  }
}

async function reinstall(site, host, status) {
  const installed = status === "installed" || status === "ready";
  const ask = "Reinstall " + host + " at site " + site + "?" +
    (installed ? " It is " + status + ": its disks may be wiped." : "");
  if (!confirm(ask)) return;
  const path = "/api/region/sites/" + encodeURIComponent(site) + "/hosts/" +
    encodeURIComponent(host) + "/reinstall" + (installed ? "?force=true" : "");
  const r = await fetch(path, { method: "POST", credentials: "same-origin", headers: { "X-Provd-Console": "1" } });
  const body = await r.json().catch(() => ({}));
  toast(r.ok ? host + " at " + site + ": " + body.status : (body.error || "HTTP " + r.status));
  refresh();
}

async function refresh() {
  try {
    const [sites, hosts] = await Promise.all([get("/api/region/sites"), get("/api/region/hosts")]);
    state.sites = sites;
    state.hosts = hosts;
    renderSites();
    renderHosts();
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("updated").textContent = String(e);
  }
}

document.getElementById("site-filter").onchange = e => { state.filter = e.target.value; renderSites(); renderHosts(); };
document.getElementById("search").oninput = e => { state.search = e.target.value; renderHosts(); };
refresh();
setInterval(refresh, 5000);
