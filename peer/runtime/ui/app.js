// amcoedge dashboard: reads this peer's /ui/state and /ui/events (server-sent snapshots), or
// another peer's view through this peer's proxy (/ui/peers/{name}/state, polled). No
// dependencies, no build step. Each share of a request is one <g class="share"> bar: its
// queue, transfer and compute seconds laid end to end from start_s, then the rest up to end_s
// ("other"), the same geometry as peer/harness/timeline.py.
"use strict";
(() => {
  const TOKEN_KEY = "amcoedge.token";
  const POLL_MS = 1000;
  const $ = (sel) => document.querySelector(sel);
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    viewing: "", // "" = the peer serving this page; else another peer's name
    source: null,
    timer: null,
    snap: null,
    reqKey: "",
    selected: null,
    selKey: null,
    generation: 0,
  };

  const esc = (v) =>
    String(v ?? "").replace(/[&<>"']/g, (c) =>
      ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const num = (v, d = 3) => (typeof v === "number" && isFinite(v) ? v.toFixed(d) : "–");
  const ms = (v) => (typeof v === "number" && isFinite(v) ? (v * 1000).toFixed(1) : "–");

  function headers() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  class Unauthorized extends Error {}

  async function getJSON(url) {
    const r = await fetch(url, { headers: headers(), cache: "no-store" });
    if (r.status === 401) throw new Unauthorized("this peer needs its API token");
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) {
      const msg = body && body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${r.status}`;
      const err = new Error(msg);
      err.status = r.status;
      throw err;
    }
    return body;
  }

  function setStatus(text, isError = false) {
    const el = $("#status");
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  function askToken(message) {
    stop();
    $("#token-form").hidden = false;
    $("#token-error").textContent = message || "";
    setStatus("waiting for the API token", true);
    $("#token-input").focus();
  }

  function fail(err) {
    if (err instanceof Unauthorized) askToken(state.token ? "that token was refused" : "");
    else setStatus(String(err.message || err), true);
  }

  function stop() {
    state.generation += 1;
    if (state.source) { state.source.close(); state.source = null; }
    if (state.timer) { clearTimeout(state.timer); state.timer = null; }
  }

  function start() {
    stop();
    const gen = state.generation;
    if (state.viewing === "") {
      // EventSource cannot report a 401, so one plain GET first checks the token.
      getJSON("/ui/state").then((snap) => {
        if (gen !== state.generation) return;
        render(snap);
        const q = state.token ? "?token=" + encodeURIComponent(state.token) : "";
        const es = new EventSource("/ui/events" + q);
        es.addEventListener("snapshot", (e) => render(JSON.parse(e.data)));
        es.onerror = () => setStatus("event stream interrupted; reconnecting…", true);
        state.source = es;
      }).catch(fail);
    } else {
      const url = "/ui/peers/" + encodeURIComponent(state.viewing) + "/state";
      const tick = () => {
        getJSON(url).then((snap) => {
          if (gen !== state.generation) return;
          render(snap);
          state.timer = setTimeout(tick, POLL_MS);
        }).catch((err) => {
          if (gen !== state.generation) return;
          fail(err);
          if (!(err instanceof Unauthorized)) state.timer = setTimeout(tick, POLL_MS);
        });
      };
      tick();
    }
  }

  // -- rendering ---------------------------------------------------------------------------

  function render(snap) {
    state.snap = snap;
    $("#self-name").textContent = snap.self || "";
    const h = snap.health || {};
    const via = state.viewing ? ` (through this peer's proxy)` : " (live)";
    setStatus(`${snap.self}: up ${num(h.uptime_s, 0)} s, ${h.alive_peers ?? "?"} peers alive, ` +
      `${h.jobs_active ?? 0} jobs running; updated ${new Date(snap.t * 1000).toLocaleTimeString()}${via}`);
    renderSelector(snap);
    renderPeers(snap);
    renderLinks(snap);
    renderTotals(snap);
    renderRequests(snap);
  }

  function renderSelector(snap) {
    if (state.viewing !== "") return; // options come from the serving peer's own view
    const names = (snap.peers || []).filter((p) => !p.self).map((p) => p.name);
    const key = snap.self + "\n" + names.join("\n");
    if (key === state.selKey) return;
    state.selKey = key;
    const sel = $("#peer-select");
    sel.innerHTML = `<option value="">this peer (${esc(snap.self)})</option>` +
      names.map((n) => `<option value="${esc(n)}">${esc(n)}</option>`).join("");
    sel.value = state.viewing;
  }

  function renderPeers(snap) {
    const rows = (snap.peers || []).map((p) => {
      const stale = typeof p.age === "number" && p.age > 5;
      const http = Array.isArray(p.http) ? p.http.join(":") : "";
      return `<tr class="peer${p.self ? " self" : ""}${stale ? " stale" : ""}" data-peer="${esc(p.name)}">` +
        `<td>${esc(p.name)}${p.self ? " (self)" : ""}</td>` +
        `<td><span class="badge ${esc(p.status)}">${esc(p.status)}</span></td>` +
        `<td class="num">${num(p.capacity, 1)}</td><td class="num">${num(p.backlog, 3)}</td>` +
        `<td class="num">${esc(p.active_shares ?? "–")}</td><td class="num">${num(p.age, 2)}</td>` +
        `<td class="num">${ms(p.rtt_s)}</td><td>${esc(http)}</td></tr>`;
    });
    $("#peers tbody").innerHTML = rows.join("");
    const total = snap.peers_total ?? rows.length;
    $("#cluster-note").textContent = total > rows.length
      ? `${rows.length} of ${total} peers shown` : `${total} peers in ${snap.self}'s view`;
  }

  function renderLinks(snap) {
    const links = Array.isArray(snap.links) ? snap.links : null;
    $("#links-wrap").hidden = !links || links.length === 0;
    if (!links || links.length === 0) return;
    const cols = [];
    for (const l of links.slice(0, 20)) for (const k of Object.keys(l)) if (!cols.includes(k)) cols.push(k);
    $("#links thead").innerHTML = "<tr>" + cols.map((c) => `<th>${esc(c)}</th>`).join("") + "</tr>";
    $("#links tbody").innerHTML = links.map((l) => "<tr class=\"link\">" + cols.map((c) => {
      const v = l[c];
      return typeof v === "number" ? `<td class="num">${num(v, 3)}</td>` : `<td>${esc(Array.isArray(v) ? v.join(":") : v)}</td>`;
    }).join("") + "</tr>").join("");
    $("#links-note").textContent = snap.links_total > links.length ? `${links.length} of ${snap.links_total}` : "";
  }

  function countTable(title, counts, cls) {
    const entries = Object.entries(counts || {}).sort((a, b) => b[1] - a[1]);
    const body = entries.length
      ? entries.map(([k, v]) => `<tr class="${cls}" data-key="${esc(k)}"><td>${esc(k)}</td><td class="num">${v}</td></tr>`).join("")
      : `<tr><td colspan="2">none</td></tr>`;
    return `<div><h3>${esc(title)}</h3><table>${body}</table></div>`;
  }

  function renderTotals(snap) {
    const t = snap.totals || {};
    $("#totals").innerHTML = `<div class="totals-grid">` +
      countTable("jobs by state", t.states, "state-count") +
      countTable("by policy", t.policies, "policy-count") +
      countTable("by mode", t.modes, "mode-count") +
      countTable("failures", t.failures, "failure-count") + `</div>`;
    const m = t.makespan || { edges: [], counts: [], n: 0 };
    $("#totals-note").textContent = m.n ? `${m.n} done, mean make-span ${num(m.mean_s)} s` : "";
    $("#histogram").innerHTML = histogram(m);
  }

  function histogram(m) {
    const counts = m.counts || [];
    if (!m.n) return "<p>no finished requests yet</p>";
    let first = counts.findIndex((c) => c > 0);
    let last = counts.length - 1 - [...counts].reverse().findIndex((c) => c > 0);
    first = Math.max(0, first - 1);
    last = Math.min(counts.length - 1, last + 1);
    const shown = counts.slice(first, last + 1);
    const max = Math.max(...shown, 1);
    const W = 36, H = 80;
    const short = (x) => String(Number(x.toPrecision(2)));
    const label = (i) => (i === 0 ? "<" + short(m.edges[0]) : i > m.edges.length - 1 ? "≥" + short(m.edges[m.edges.length - 1]) : short(m.edges[i - 1]));
    const bars = shown.map((c, k) => {
      const h = (c / max) * H;
      const i = first + k;
      return `<g><title>${label(i)} s .. : ${c}</title><rect x="${k * W + 2}" y="${H - h}" width="${W - 4}" height="${h}"></rect>` +
        `<text x="${k * W + W / 2}" y="${H + 11}" text-anchor="middle">${esc(label(i))}</text>` +
        (c ? `<text x="${k * W + W / 2}" y="${H - h - 2}" text-anchor="middle">${c}</text>` : "") + `</g>`;
    }).join("");
    return `<svg class="hist" viewBox="0 -12 ${shown.length * W} ${H + 26}" width="${shown.length * W}" height="${H + 26}">${bars}</svg>` +
      `<div><small>bins start at the labelled seconds</small></div>`;
  }

  // The rows of one request's chart: peers in order of their first share.
  function ganttSvg(shares, span, makespan, predicted, rowH) {
    const rows = [];
    for (const s of shares) if (!rows.includes(s[0])) rows.push(s[0]);
    const H = Math.max(rows.length, 1) * rowH;
    const X = (x) => (x / span) * 1000;
    let out = "";
    shares.forEach((s, k) => {
      const [peer, units, q, t, c, start, end] = s;
      const y = rows.indexOf(peer) * rowH + 1;
      let x = start || 0;
      let g = "";
      for (const [w, cls] of [[q, "q"], [t, "t"], [c, "c"]]) {
        if (w > 0) { g += `<rect class="seg ${cls}" x="${X(x)}" y="${y}" width="${X(w)}" height="${rowH - 2}"></rect>`; x += w; }
      }
      if (end - x > 1e-9) g += `<rect class="seg o" x="${X(x)}" y="${y}" width="${X(end - x)}" height="${rowH - 2}"></rect>`;
      const tip = `${peer}: ${units} units, queue ${num(q)} s, transfer ${num(t)} s, compute ${num(c)} s, ${num(start)}–${num(end)} s`;
      out += `<g class="share" data-share="${k}" data-peer="${esc(peer)}"><title>${esc(tip)}</title>${g}</g>`;
    });
    if (typeof makespan === "number") out += `<line class="mk" x1="${X(makespan)}" x2="${X(makespan)}" y1="0" y2="${H}"></line>`;
    if (typeof predicted === "number") out += `<line class="pr" x1="${X(predicted)}" x2="${X(predicted)}" y1="0" y2="${H}"></line>`;
    return { svg: `<svg class="gantt" viewBox="0 0 1000 ${H}" preserveAspectRatio="none" style="height:${H}px">${out}</svg>`, rows };
  }

  function spanOf(r) {
    let span = Math.max(r.makespan_s || 0, r.predicted_s || 0);
    for (const s of r.shares || []) span = Math.max(span, s[6] || 0);
    return span > 0 ? span : 1;
  }

  function requestRow(r) {
    const when = new Date(r.created * 1000).toLocaleTimeString();
    const shares = r.shares || [];
    const vs = typeof r.makespan_s === "number"
      ? `${num(r.makespan_s)} s (pred. ${num(r.predicted_s)})` : esc(r.error || r.state);
    const more = r.shares_total > shares.length ? ` of ${r.shares_total}` : "";
    const meta = `${when} ${esc(r.kind)} ${esc(r.policy || "–")}/${esc(r.mode || "–")} ` +
      `<span class="badge ${esc(r.state)}">${esc(r.state)}</span> ${vs} · ${shares.length}${more} shares`;
    const chart = shares.length
      ? ganttSvg(shares, spanOf(r), r.makespan_s, r.predicted_s, 7).svg
      : `<span>${r.state === "failed" ? "failed: " + esc(r.error) : "in progress " + esc(r.progress.join("/"))}</span>`;
    const sel = state.selected === r.id ? " selected" : "";
    return `<div class="req${sel}" data-job="${esc(r.id)}" data-shares="${shares.length}"><div class="meta" title="${esc(r.id)}">${meta}</div>${chart}</div>`;
  }

  function renderRequests(snap) {
    const reqs = snap.requests || [];
    const key = (state.viewing || "") + "|" + reqs.map((r) => r.id + r.state).join(",");
    $("#requests-note").textContent = `${reqs.length} most recent at ${snap.self}`;
    if (key === state.reqKey) return; // nothing new: keep the DOM (and the scroll position)
    state.reqKey = key;
    $("#requests").innerHTML = reqs.length ? reqs.map(requestRow).join("") : "<p>no requests yet</p>";
  }

  // -- one request's full breakdown ----------------------------------------------------------

  async function openDetail(id) {
    state.selected = id;
    for (const el of document.querySelectorAll(".req")) el.classList.toggle("selected", el.dataset.job === id);
    const compact = ((state.snap && state.snap.requests) || []).find((r) => r.id === id);
    $("#detail").hidden = false;
    $("#detail-id").textContent = id;
    $("#detail-body").innerHTML = compact ? detailHtml(compact, null) : "loading…";
    const url = state.viewing
      ? `/ui/peers/${encodeURIComponent(state.viewing)}/jobs/${encodeURIComponent(id)}`
      : `/v1/jobs/${encodeURIComponent(id)}`;
    try {
      const full = await getJSON(url);
      if (state.selected === id) $("#detail-body").innerHTML = detailHtml(compact, full);
    } catch (err) {
      if (err instanceof Unauthorized) return fail(err);
      if (state.selected === id) {
        $("#detail-body").insertAdjacentHTML("beforeend",
          `<p class="error-text">full record unavailable (${esc(err.message)}); showing the dashboard's copy</p>`);
      }
    }
    $("#detail").scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  function detailHtml(compact, full) {
    const res = (full && full.result) || {};
    const plan = res.plan || {};
    const timing = res.timing || {};
    const shares = timing.peers
      ? timing.peers.map((p) => [p.peer, p.units, p.queue_s, p.transfer_s, p.compute_s, p.start_s, p.end_s])
      : (compact && compact.shares) || [];
    const r = compact || {};
    const makespan = timing.makespan_s ?? r.makespan_s;
    const predicted = plan.predicted_makespan_s ?? r.predicted_s;
    const kv = [
      ["state", (full && full.state) || r.state],
      ["kind", (full && full.kind) || r.kind],
      ["policy", `${plan.policy ?? r.policy ?? "–"} (asked ${plan.requested_policy ?? r.requested_policy ?? "–"})`],
      ["provider", plan.provider ?? "–"],
      ["fallback", plan.fallback ?? "none"],
      ["mode", plan.mode ?? r.mode ?? "–"],
      ["make-span", `${num(makespan)} s actual, ${num(predicted)} s predicted`],
      ["planning", timing.plan_s !== undefined ? `${ms(timing.plan_s)} ms` : "–"],
      ["candidates", plan.candidates ?? "–"],
      ["alternatives", plan.alternatives ? Object.entries(plan.alternatives).map(([m, v]) => `${m} ${num(v)} s`).join(", ") || "–" : "–"],
      ["error", full && full.error ? `${full.error.code}: ${full.error.message}` : r.error || "none"],
    ];
    let html = `<dl class="kv">${kv.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("")}</dl>`;
    if (shares.length) {
      const g = ganttSvg(shares, spanOf({ shares, makespan_s: makespan, predicted_s: predicted }), makespan, predicted, 18);
      html += `<div class="detail-gantt"><div>${g.rows.map((n) => `<div class="lab" style="height:18px">${esc(n)}</div>`).join("")}</div>${g.svg}</div>`;
      html += `<table class="shares"><thead><tr><th>peer</th><th class="num">units</th><th class="num">queue s</th>` +
        `<th class="num">transfer s</th><th class="num">compute s</th><th class="num">start s</th><th class="num">end s</th></tr></thead><tbody>` +
        shares.map((s) => `<tr><td>${esc(s[0])}</td><td class="num">${esc(s[1])}</td>` +
          s.slice(2).map((v) => `<td class="num">${num(v)}</td>`).join("") + `</tr>`).join("") + `</tbody></table>`;
    }
    if (Array.isArray(plan.shares) && plan.shares.length) {
      html += `<h3>Plan</h3><table><thead><tr><th>peer</th><th>units</th><th>steps</th><th class="num">predicted s</th></tr></thead><tbody>` +
        plan.shares.map((s) => `<tr><td>${esc(s.peer)}</td><td>${esc((s.units || []).length)}</td>` +
          `<td>${esc(s.steps ? s.steps.join("–") : "")}</td><td class="num">${num(s.predicted_s)}</td></tr>`).join("") + `</tbody></table>`;
    }
    if (Array.isArray(res.replans) && res.replans.length) {
      html += `<h3>Re-plans</h3><pre>${esc(JSON.stringify(res.replans, null, 1))}</pre>`;
    }
    if (Array.isArray(res.images) && res.images.length) {
      html += `<h3>Images</h3><div class="images">` + res.images.slice(0, 64).map((b) =>
        `<img alt="generated image" src="data:image/png;base64,${esc(b)}">`).join("") + `</div>`;
    }
    return html;
  }

  // -- wiring ------------------------------------------------------------------------------

  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.token = $("#token-input").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("#token-form").hidden = true;
    start();
  });
  $("#peer-select").addEventListener("change", (e) => {
    state.viewing = e.target.value;
    state.reqKey = "";
    state.selected = null;
    $("#detail").hidden = true;
    start();
  });
  $("#requests").addEventListener("click", (e) => {
    const row = e.target.closest(".req");
    if (row) openDetail(row.dataset.job);
  });
  $("#detail-close").addEventListener("click", () => {
    state.selected = null;
    $("#detail").hidden = true;
    for (const el of document.querySelectorAll(".req.selected")) el.classList.remove("selected");
  });
  window.amcoedgeUi = { render, state, stop }; // for tests: stop live updates, render a snapshot
  start();
})();
