// clew view: runs, groups, episodes and per-token credit. Data from the JSON API, or from the JSON embedded by
// `clew view --export`. Every string from an env or a model is inserted as a text node (never as HTML).
"use strict";
(function () {
  const NEG = [33, 102, 172], POS = [178, 24, 43]; // diverging scale: blue < 0 < red, white at 0
  const STATUSES = ["all", "success", "failure", "invalid", "truncated", "error", "infra_error", "policy_error"];
  const SORTS = ["group", "success", "outcome", "spread", "turns"];
  const embedded = document.getElementById("clew-data");
  const BUNDLE = embedded ? JSON.parse(embedded.textContent) : null;
  const app = document.getElementById("app");
  const tip = document.getElementById("tip");

  // ---- DOM helpers: attributes by setAttribute (no event-handler attributes), children as text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (/^on/i.test(k)) throw new Error("event attributes are not allowed");
      if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const num = (v, d = 3) => (v === null || v === undefined ? "—" : Number(v).toFixed(d));
  const enc = encodeURIComponent;
  const link = (parts, text, attrs) => el("a", Object.assign({ href: "#/" + parts.map((p) => enc(String(p))).join("/") }, attrs), text);

  // ---- colour scale, shared by tokens and legend
  function creditColor(adv, scale) {
    const t = scale > 0 ? Math.max(-1, Math.min(1, adv / scale)) : 0;
    const end = t < 0 ? NEG : POS, a = Math.abs(t);
    const c = end.map((e) => Math.round(255 + (e - 255) * a));
    return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
  }
  window.clewCreditColor = creditColor;

  function legend(scale) {
    const bar = el("span", { class: "legend-bar" });
    for (let i = -5; i <= 5; i++) {
      const sw = el("span", { class: "swatch" });
      sw.style.backgroundColor = creditColor((i / 5) * scale, scale);
      bar.appendChild(sw);
    }
    return el("div", { class: "legend", "data-scale": scale }, "advantage ", el("span", {}, num(-scale)), bar,
      el("span", {}, "+" + num(scale)), el("span", { class: "muted" }, " (blue: below baseline, red: above; scale = max |advantage| in view)"));
  }

  // ---- data sources
  async function api(path) {
    const res = await fetch(path, { headers: { Accept: "application/json" } });
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || res.statusText);
    return body;
  }
  const server = {
    runs: () => api("/api/runs"),
    curves: (run) => api(`/api/runs/${enc(run)}/curves`),
    groups: (run, it, o) => api(`/api/runs/${enc(run)}/iterations/${it}/groups?status=${enc(o.status)}&sort=${enc(o.sort)}&q=${enc(o.q)}`),
    episode: (run, it, e) => api(`/api/runs/${enc(run)}/iterations/${it}/episodes/${e}`),
    compare: (run, it, a, b) => api(`/api/runs/${enc(run)}/iterations/${it}/compare?a=${a}&b=${b}`),
  };
  const exported = BUNDLE && {
    runs: async () => BUNDLE.runs,
    curves: async (run) => BUNDLE.curves[run],
    groups: async (run, it, o) => filterGroups(BUNDLE.groups, o),
    episode: async (run, it, e) => needEpisode(e),
    compare: async (run, it, a, b) => {
      const A = needEpisode(a), B = needEpisode(b);
      return { run, iteration: it, a: A, b: B, first_divergence: firstDivergence(A, B) };
    },
  };
  const source = exported || server;

  function needEpisode(e) {
    const found = BUNDLE.episodes[String(e)];
    if (!found) throw new Error(`episode ${e} is not in this export`);
    return found;
  }

  function firstDivergence(a, b) {
    const n = Math.max(a.turns.length, b.turns.length);
    for (let t = 0; t < n; t++) {
      const x = a.turns[t], y = b.turns[t];
      if (!x || !y || x.tokens.map((k) => k.id).join(",") !== y.tokens.map((k) => k.id).join(",")) return t;
    }
    return null;
  }

  // The export's copy of the server's filter/sort/search (the server does these in DuckDB).
  function filterGroups(page, o) {
    const q = o.q.trim().toLowerCase();
    const keep = {
      all: () => true, success: (e) => e.success, failure: (e) => !e.success, invalid: (e) => e.invalid_actions > 0,
      truncated: (e) => e.truncated, error: (e) => e.error !== null,
      infra_error: (e) => e.failure === "infra", policy_error: (e) => e.failure === "policy",
    }[o.status];
    const hits = (e) => needEpisode(e.episode).turns.filter((t) => t.action_text.toLowerCase().includes(q) || t.observation.toLowerCase().includes(q)).length;
    const groups = page.groups.map((g) => {
      const eps = g.episodes.map((e) => Object.assign({}, e, { matches: q ? hits(e) : e.matches }));
      return Object.assign({}, g, { episodes: eps.filter((e) => keep(e) && (!q || e.matches > 0)) });
    }).filter((g) => g.episodes.length > 0);
    const mean = (g) => page.groups.find((x) => x.group === g.group).episodes.reduce((s, e) => s + e.turns, 0) / g.episodes.length;
    const key = { group: (g) => -g.group, success: (g) => g.success_rate, outcome: (g) => g.mean_outcome, spread: (g) => g.outcome_std, turns: mean }[o.sort];
    groups.sort((x, y) => key(y) - key(x) || x.group - y.group);
    return Object.assign({}, page, { status: o.status, sort: o.sort, query: o.q, groups });
  }

  // ---- pages
  function crumbs(...items) {
    const nav = document.getElementById("crumbs");
    nav.replaceChildren(...items.flatMap((x, i) => (i ? [el("span", { class: "sep" }, " / "), x] : [x])));
  }

  async function runsPage() {
    crumbs(link(["runs"], "runs"));
    const runs = await source.runs();
    const curves = await Promise.all(runs.map((r) => source.curves(r.name)));
    const rows = runs.map((r, i) => el("tr", { "data-run": r.name },
      el("td", {}, el("span", { class: "dot" }, "●"), " ", r.name),
      el("td", {}, String(r.iterations.length)), el("td", {}, r.env_steps === null ? "—" : String(r.env_steps)),
      el("td", {}, r.last_eval ? `${(100 * r.last_eval.success).toFixed(1)}% [${(100 * r.last_eval.low).toFixed(1)}, ${(100 * r.last_eval.high).toFixed(1)}]` : "—"),
      el("td", {}, r.iterations.length ? iterationPicker(r) : "no trajectories")));
    rows.forEach((row, i) => { row.querySelector(".dot").style.color = ClewCharts.COLORS[i % ClewCharts.COLORS.length]; });
    const table = el("table", { class: "runs" }, el("tr", {}, ...["run", "iterations", "env steps", "last eval success (95% CI)", "open"].map((h) => el("th", {}, h))), rows);
    app.replaceChildren(el("h1", {}, "Runs"), table, el("div", { class: "charts" }, chartPanels(curves)));
  }

  function iterationPicker(run) {
    const select = el("select", { "aria-label": "iteration" }, run.iterations.map((n) => el("option", { value: n }, `iteration ${n}`)));
    select.value = String(run.iterations[run.iterations.length - 1]);
    const go = el("button", { type: "button" }, "groups");
    go.addEventListener("click", () => { location.hash = `#/run/${enc(run.name)}/it/${select.value}`; });
    return el("span", {}, select, " ", go);
  }

  const PANELS = [
    { title: "success rate", keys: ["rollout/success_rate"], eval: "success" },
    { title: "mean return", keys: ["rollout/mean_return"], eval: "mean_return" },
    { title: "KL to behaviour policy", keys: ["policy/approx_kl"] },
    { title: "entropy", keys: ["policy/entropy"] },
    { title: "clip fraction", keys: ["policy/clipfrac"] },
    { title: "grad norm", keys: ["train/grad_norm"] },
    { title: "turns per episode", keys: ["rollout/mean_turns"] },
    { title: "action tokens per turn", keys: ["lengths/action_tokens"] },
    { title: "prompt tokens per turn", keys: ["lengths/prompt_tokens"] },
    { title: "seconds per iteration", keys: ["time/iteration_s", "time/rollout_s"] },
    { title: "reward sources (mean score)", match: /^rewards\/[^/]+\/mean$/ },
    { title: "judges: failed judgements and disagreement", keys: ["rewards/judge_failed_share", "rewards/disagreement"] },
    { title: "monitor flags", match: /^monitor\// },
  ];

  function chartPanels(curves) {
    const out = [];
    for (const spec of PANELS) {
      const lines = [], intervals = [], markers = [];
      curves.forEach((c, i) => {
        const color = ClewCharts.COLORS[i % ClewCharts.COLORS.length];
        const keys = spec.match ? Object.keys(c.series).filter((k) => spec.match.test(k)).sort() : spec.keys;
        for (const m of c.markers || []) markers.push({ x: m.env_steps, label: m.detector, color });
        keys.forEach((k, j) => { if (c.series[k]) lines.push({ label: `${c.run} ${k}`, color, dash: ClewCharts.DASHES[j % 4], points: c.series[k] }); });
        for (const p of spec.eval ? c.evals : []) {
          const y = spec.eval === "success" ? p.success : p.mean_return;
          if (y !== null) intervals.push({ color, x: p.env_steps, y, low: spec.eval === "success" ? p.low : y, high: spec.eval === "success" ? p.high : y });
        }
      });
      if (!lines.length && !intervals.length) continue;
      const keys = (spec.keys || [spec.match.source]).map((k, j) => `${["solid", "dashed", "dotted"][j] || ""} ${k}`).join(", ");
      const note = spec.eval ? `lines: training rollouts (${keys}); points: held-out eval${spec.eval === "success" ? " with 95% interval" : ""}` : keys;
      out.push(el("figure", { class: "panel", "data-panel": spec.title }, ClewCharts.lineChart({ title: spec.title, lines, intervals, markers }), el("figcaption", {}, note)));
    }
    return out;
  }

  async function groupsPage(run, it, opts) {
    crumbs(link(["runs"], "runs"), el("span", {}, run), el("span", {}, `iteration ${it}`));
    const page = await source.groups(run, it, opts);
    const controls = groupControls(run, it, opts, page);
    const count = el("p", { class: "muted", id: "count" }, `${page.groups.length} of ${page.total_groups} groups, ${page.groups.reduce((s, g) => s + g.episodes.length, 0)} of ${page.total_episodes} episodes`);
    app.replaceChildren(el("h1", {}, `${run} · iteration ${it}`), controls, count, el("div", { class: "groups" }, page.groups.map((g) => groupCard(run, it, g, opts.q))));
  }

  function groupControls(run, it, opts, page) {
    const go = (o) => { location.hash = `#/run/${enc(run)}/it/${o.it}?status=${enc(o.status)}&sort=${enc(o.sort)}&q=${enc(o.q)}`; };
    const cur = Object.assign({ it }, opts);
    const iters = el("select", { "aria-label": "iteration", id: "iteration" }, (page.iterations || [it]).map((n) => el("option", { value: n }, `iteration ${n}`)));
    iters.value = String(it);
    const status = el("select", { "aria-label": "filter", id: "status" }, STATUSES.map((s) => el("option", { value: s }, s)));
    status.value = opts.status;
    const sort = el("select", { "aria-label": "sort", id: "sort" }, SORTS.map((s) => el("option", { value: s }, `sort: ${s}`)));
    sort.value = opts.sort;
    const search = el("input", { type: "search", id: "search", placeholder: "search actions and observations", value: opts.q });
    iters.addEventListener("change", () => go(Object.assign(cur, { it: iters.value })));
    status.addEventListener("change", () => go(Object.assign(cur, { status: status.value })));
    sort.addEventListener("change", () => go(Object.assign(cur, { sort: sort.value })));
    search.addEventListener("change", () => go(Object.assign(cur, { q: search.value })));
    return el("div", { class: "controls" }, iters, status, sort, search);
  }

  function groupCard(run, it, g, q) {
    const eps = [...g.episodes].sort((a, b) => b.outcome - a.outcome || a.episode - b.episode);
    const pair = eps.length > 1 ? [eps[0].episode, eps[eps.length - 1].episode] : null;
    const cmp = pair ? link(["run", run, "it", it, "cmp", pair[0], pair[1]], "compare best vs worst", { class: "compare-link" }) : null;
    const picked = [];
    const tiles = g.episodes.map((e) => episodeTile(run, it, e, q, (checked) => {
      if (checked) picked.push(e.episode); else picked.splice(picked.indexOf(e.episode), 1);
      if (cmp && picked.length >= 2) { cmp.setAttribute("href", `#/run/${enc(run)}/it/${it}/cmp/${picked[picked.length - 2]}/${picked[picked.length - 1]}`); cmp.textContent = `compare ${picked[picked.length - 2]} vs ${picked[picked.length - 1]}`; }
    }));
    const head = el("div", { class: "group-head" }, el("strong", {}, `group ${g.group}`), " ", el("span", { class: "task" }, g.task_id),
      el("span", { class: "muted" }, ` seed ${g.seed} · success ${(100 * g.success_rate).toFixed(0)}% · mean outcome ${num(g.mean_outcome)} · std ${num(g.outcome_std)} `), cmp);
    return el("section", { class: "group", "data-group": g.group }, head, el("div", { class: "tiles" }, tiles));
  }

  function episodeTile(run, it, e, q, onPick) {
    const box = el("input", { type: "checkbox", "aria-label": `select episode ${e.episode} to compare` });
    box.addEventListener("change", () => onPick(box.checked));
    const ending = e.error ? failureLabel(e) : e.truncated ? `truncated (${e.truncation_reason || "?"})` : e.terminated ? "terminated" : "open";
    const cls = ["tile", e.success ? "success" : "failure", e.error ? `errored ${e.failure || "infra"}` : ""].join(" ");
    return el("div", { class: cls, "data-episode": e.episode },
      el("div", {}, link(["run", run, "it", it, "ep", e.episode], `episode ${e.episode}`), e.agent !== null && e.agent !== undefined ? el("span", { class: "seat" }, ` seat ${e.agent}`) : null, " ", box),
      el("div", {}, e.success ? "success" : "failure", ` · outcome ${num(e.outcome, 2)}`),
      el("div", {}, `return ${num(e.total_reward, 2)} · ${e.turns} turns`), el("div", { class: "muted" }, ending),
      e.invalid_actions ? el("div", { class: "warn" }, `${e.invalid_actions} invalid actions`) : null,
      e.error ? el("div", { class: "err", title: e.error }, e.error.slice(0, 120)) : null,
      q ? el("div", { class: "hits" }, `${e.matches} matching turns`) : null);
  }

  // An errored episode's type: infra (left out of credit and baselines) or policy (kept, scored as a failure).
  function failureLabel(s) {
    return s.failure === "policy" ? "policy error (scored as a failure)" : "infra error (left out of credit)";
  }

  function maxAbs(episodes) {
    let m = 0;
    for (const ep of episodes) for (const t of ep.turns) for (const k of t.tokens) m = Math.max(m, Math.abs(k.advantage));
    return m;
  }

  function tokensLine(turn, scale) {
    const spans = turn.tokens.map((k) => {
      const span = el("span", { class: "tok", "data-index": k.index, "data-id": k.id, "data-text": k.text, "data-logprob": k.logprob,
        "data-adv": k.advantage, "data-entropy": k.entropy === null ? "" : k.entropy }, k.text === "" ? "∅" : k.text);
      const bg = creditColor(k.advantage, scale);
      span.style.backgroundColor = bg;
      if (scale > 0 && Math.abs(k.advantage / scale) > 0.6) span.classList.add("dark");
      return span;
    });
    return el("div", { class: "tokens" }, spans.length ? spans : el("span", { class: "muted" }, "(no action tokens)"));
  }

  function turnStats(t) {
    return el("div", { class: "stats" }, `reward ${num(t.reward)} · penalty ${num(t.penalty)} · return ${num(t.turn_return)} · advantage ${num(t.advantage)}`,
      t.state_key !== null ? el("span", { class: "muted" }, " · state ", el("code", {}, t.state_key)) : null, t.invalid ? el("span", { class: "warn" }, " · invalid action") : null);
  }

  function anchorBlock(run, it, t) {
    if (t.state_key === null && (t.anchor_group === null || t.anchor_group === undefined)) return null;
    const rows = t.anchor.map((m) => el("tr", {}, el("td", {}, link(["run", run, "it", it, "ep", m.episode], `episode ${m.episode}`)), el("td", {}, String(m.turn)),
      el("td", {}, num(m.turn_return)), el("td", {}, num(m.advantage)), el("td", {}, el("code", {}, m.action_text))));
    const summary = el("summary", {}, `anchor state: ${t.anchor.length} other turn${t.anchor.length === 1 ? "" : "s"} of this group share this state`);
    return el("details", { class: "anchor" }, summary, rows.length ? el("table", {}, el("tr", {}, ["episode", "turn", "return", "advantage", "action"].map((h) => el("th", {}, h))), rows) : null);
  }

  function contextEdit(t) {
    try { return JSON.parse(t.info || "{}").context_edit || null; } catch (err) { return null; }
  }

  function turnCard(run, it, t, scale, extraClass) {
    const edit = contextEdit(t);  // a sampled context edit (a summary): a turn with no env step
    return el("section", { class: "turn " + (extraClass || "") + (edit ? " edit" : ""), "data-turn": t.turn },
      t.segment_start && t.turn > 0 ? el("div", { class: "segment-start" }, "new segment: this prompt does not extend the last turn's (trained as separate rows)") : null,
      el("div", { class: "turn-head" }, el("strong", {}, (edit ? `turn ${t.turn} · ${edit} (context edit)` : `turn ${t.turn}`) + (t.agent !== null && t.agent !== undefined ? ` · seat ${t.agent}` : "")), turnStats(t)),
      el("div", { class: "label" }, edit ? `${edit}, sampled and credited like an action` : "action"), tokensLine(t, scale), el("div", { class: "action-text" }, el("code", {}, t.action_text)),
      el("div", { class: "label" }, "observation"), el("pre", { class: "obs" }, t.observation), anchorBlock(run, it, t));
  }

  function promptBlock(ep) {
    const body = ep.prompt_text !== null ? el("pre", { class: "obs prompt" }, ep.prompt_text) : el("p", { class: "muted" }, `no tokenizer found: ${ep.prompt_tokens} prompt tokens (ids only)`);
    return el("details", { class: "prompt-block", open: true }, el("summary", {}, "prompt of turn 0 (framing + first observation)"), body);
  }

  function episodeHead(ep) {
    const s = ep.summary;
    const ending = s.error ? `${failureLabel(s)}: ${s.error}` : s.truncated ? `truncated (${s.truncation_reason || "?"})` : s.terminated ? "terminated" : "open";
    const seat = s.agent !== null && s.agent !== undefined ? ` · seat ${s.agent}` : "";
    return el("p", { class: "episode-head" }, `task ${ep.task_id} · seed ${ep.seed} · group ${s.group}${seat} · ${s.success ? "success" : "failure"} · outcome ${num(s.outcome)} · return ${num(s.total_reward)} · ${s.turns} turns · ${ending}`);
  }

  // A self-play game: every seat's episode (its own turns, its outcome from its side, its mean turn advantage).
  function gameBlock(run, it, ep) {
    if (!ep.game || !ep.game.length) return null;
    const rows = ep.game.map((g) => el("tr", { class: g.episode === ep.summary.episode ? "current" : "" }, el("td", {}, `seat ${g.agent}`),
      el("td", {}, link(["run", run, "it", it, "ep", g.episode], `episode ${g.episode}`)), el("td", {}, num(g.outcome)), el("td", {}, String(g.turns)), el("td", {}, num(g.mean_advantage))));
    return el("details", { class: "game", open: true }, el("summary", {}, `self-play game ${ep.summary.match}: ${ep.game.length} seats`),
      el("table", {}, el("tr", {}, ["seat", "episode", "outcome (its side)", "turns", "mean advantage"].map((h) => el("th", {}, h))), rows));
  }

  async function episodePage(run, it, e) {
    const ep = await source.episode(run, it, e);
    crumbs(link(["runs"], "runs"), link(["run", run, "it", it], `${run} · iteration ${it}`), el("span", {}, `episode ${e}`));
    const scale = maxAbs([ep]);
    const noTokenizer = el("p", { class: "warn" }, "no tokenizer found for this run: tokens are shown as ids");
    app.replaceChildren(...[el("h1", {}, `Episode ${e}`), episodeHead(ep), gameBlock(run, it, ep), ep.tokenizer ? null : noTokenizer, legend(scale), promptBlock(ep),
      el("div", { class: "turns" }, ep.turns.map((t) => turnCard(run, it, t, scale)))].filter(Boolean));
  }

  async function comparePage(run, it, a, b) {
    const cmp = await source.compare(run, it, a, b);
    crumbs(link(["runs"], "runs"), link(["run", run, "it", it], `${run} · iteration ${it}`), el("span", {}, `compare ${a} / ${b}`));
    const scale = maxAbs([cmp.a, cmp.b]);
    const d = cmp.first_divergence;
    const rows = [];
    for (let t = 0; t < Math.max(cmp.a.turns.length, cmp.b.turns.length); t++) {
      const cls = t === d ? "diverge" : "";
      const cell = (ep) => (ep.turns[t] ? turnCard(run, it, ep.turns[t], scale, cls) : el("div", { class: "turn ended" }, "(episode ended)"));
      if (t === d) rows.push(el("div", { class: "diverge-mark", id: "first-divergence" }, `first divergence: turn ${t}`));
      rows.push(el("div", { class: "pair", "data-turn": t }, cell(cmp.a), cell(cmp.b)));
    }
    const heads = el("div", { class: "pair" }, [cmp.a, cmp.b].map((ep) => el("div", {}, el("h2", {}, link(["run", run, "it", it, "ep", ep.summary.episode], `episode ${ep.summary.episode}`)), episodeHead(ep))));
    app.replaceChildren(el("h1", {}, `Compare episodes ${a} and ${b}`), el("p", {}, d === null ? "identical actions" : `actions first differ at turn ${d}`),
      legend(scale), heads, promptBlock(cmp.a), ...rows);
  }

  // ---- tooltip over tokens (event delegation)
  document.addEventListener("mouseover", (ev) => {
    const tok = ev.target.closest && ev.target.closest(".tok");
    if (!tok) { tip.hidden = true; return; }
    const d = tok.dataset;
    tip.replaceChildren(el("div", {}, "text ", el("code", {}, JSON.stringify(d.text))), el("div", {}, `id ${d.id}`),
      el("div", {}, `behaviour log-prob ${num(d.logprob, 4)}`), el("div", {}, `advantage ${num(d.adv, 4)}`),
      el("div", {}, `entropy ${d.entropy === "" ? "—" : num(d.entropy, 4)}`));
    const r = tok.getBoundingClientRect();
    tip.style.left = `${Math.min(r.left, window.innerWidth - 260)}px`;
    tip.style.top = `${r.bottom + 6}px`;
    tip.hidden = false;
  });

  // ---- router
  function parseRoute() {
    const [path, query] = location.hash.replace(/^#/, "").split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    const params = new URLSearchParams(query || "");
    const opts = { status: params.get("status") || "all", sort: params.get("sort") || "group", q: params.get("q") || "" };
    if (parts[0] === "run" && parts[2] === "it") {
      const [run, it] = [parts[1], Number(parts[3])];
      if (parts[4] === "ep") return () => episodePage(run, it, Number(parts[5]));
      if (parts[4] === "cmp") return () => comparePage(run, it, Number(parts[5]), Number(parts[6]));
      return () => groupsPage(run, it, opts);
    }
    if (BUNDLE && parts[0] !== "runs") return () => groupsPage(BUNDLE.run, BUNDLE.iteration, opts);
    return runsPage;
  }

  async function route() {
    tip.hidden = true;
    try {
      await parseRoute()();
      document.body.dataset.ready = location.hash || "#/";
    } catch (err) {
      app.replaceChildren(el("p", { class: "err", id: "error" }, String(err.message || err)));
      document.body.dataset.ready = "error";
    }
  }
  window.addEventListener("hashchange", route);
  route();
})();
