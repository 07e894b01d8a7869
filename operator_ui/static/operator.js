// Operator page: polls /api/status (4 Hz), the camera (5 Hz), the curve and episodes (1 Hz).
"use strict";
const $ = (id) => document.getElementById(id);
let latest = null;

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(data?.error || `${response.status} ${response.statusText}`);
  return data;
}

async function command(path, payload) {
  try {
    const data = await api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: payload === undefined ? "" : JSON.stringify(payload),
    });
    $("message").textContent = `${path.replace("/api/", "")}: ok${data?.action ? " (" + data.action + ")" : ""}`;
  } catch (err) {
    $("message").textContent = `${path.replace("/api/", "")}: ${err.message}`;
  }
  refreshStatus();
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  return typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(digits)) : String(value);
}

async function refreshStatus() {
  try {
    latest = await api("/api/status");
  } catch (err) {
    $("warnings").innerHTML = `<div>operator page cannot reach its server: ${err.message}</div>`;
    return;
  }
  const s = latest;
  $("state").textContent = s.finished ? `${s.episode_state} (run finished)` : s.episode_state;
  $("episode").textContent = s.episode;
  $("step").textContent = `${s.step} / ${s.max_episode_steps}`;
  $("reward").textContent = fmt(s.reward, 2);
  $("detector").textContent = s.success ? "success" : "not yet";
  $("state-machine").innerHTML = s.episode_states
    .map((name) => `<li class="${name === s.episode_state ? "active" : ""}">${name.replaceAll("_", " ")}</li>`)
    .join("");
  $("warnings").innerHTML = s.warnings
    .map((w) => `<div class="${w.code === "estop" ? "estop" : ""}" data-code="${w.code}">${w.text}</div>`)
    .join("");
  $("btn-reset-done").disabled = s.episode_state !== "waiting_for_reset";
  $("btn-discard").disabled = !["running", "awaiting_label"].includes(s.episode_state);
  $("btn-home").disabled = s.episode_state === "running";
  $("btn-estop-clear").disabled = !s.robot.estopped;
  const l = s.learner;
  const rows = [
    ["phase", l.phase], ["policy version", l.policy_version], ["critic updates", l.critic_updates],
    ["policy updates", l.policy_updates], ["critic loss", l.critic_loss], ["policy loss", l.policy_loss],
    ["Q (data actions)", l.q_data], ["Q (optimized)", l.q_optimized], ["online episodes", l.online_episodes], ["learning", l.learning_paused ? "paused" : "on"],
  ];
  if (l.catching_up) rows.splice(1, 0, ["critic catch-up", `${l.warmup_critic_updates ?? 0} updates (next episode waits)`]);
  $("learner").innerHTML = rows.map(([k, v]) => `<tr><th>${k}</th><td>${fmt(v)}</td></tr>`).join("");
}

function refreshCamera() {
  const img = $("camera");
  const next = new Image();
  next.onload = () => { img.src = next.src; $("camera-status").textContent = ""; };
  next.onerror = () => { $("camera-status").textContent = "no camera image"; };
  next.src = `/api/camera.jpg?t=${Date.now()}`;
}

async function refreshCurve() {
  let curve;
  try { curve = await api("/api/curve"); } catch (err) { return; }
  const svg = $("curve");
  const W = 400, H = 180, pad = 24;
  const n = Math.max(curve.points.length, 10);
  const x = (i) => pad + ((W - 2 * pad) * (i - 1)) / Math.max(n - 1, 1);
  const y = (v) => H - pad - (H - 2 * pad) * v;
  const colour = { warmup: "#ef6c00", online: "#1565c0", offline_eval: "#6a1b9a" };
  const dots = curve.points
    .map((p) => `<circle cx="${x(p.n)}" cy="${y(p.success ? 1 : 0)}" r="3" fill="${colour[p.phase] || "#555"}"><title>${p.episode_id}</title></circle>`)
    .join("");
  const line = curve.points.map((p) => `${x(p.n)},${y(p.moving_average)}`).join(" ");
  svg.innerHTML =
    `<line x1="${pad}" y1="${y(0)}" x2="${W - pad}" y2="${y(0)}" stroke="#aaa"/>` +
    `<line x1="${pad}" y1="${y(1)}" x2="${W - pad}" y2="${y(1)}" stroke="#eee"/>` +
    `<text x="2" y="${y(1) + 4}" font-size="10">100%</text><text x="8" y="${y(0) + 4}" font-size="10">0%</text>` +
    `<polyline id="curve-line" points="${line}" fill="none" stroke="#2e7d32" stroke-width="2"/>` + dots;
  svg.dataset.points = String(curve.points.length);
  $("phase-rates").textContent = Object.entries(curve.phases)
    .map(([phase, r]) => `${phase}: ${r.successes}/${r.episodes} (${Math.round(100 * r.success_rate)}%)`)
    .join(" · ") + ` — line: moving average over ${curve.window}`;
}

async function refreshEpisodes() {
  let episodes;
  try { episodes = await api("/api/episodes?limit=12"); } catch (err) { return; }
  $("episodes").innerHTML = episodes
    .map((e) => `<div class="episode ${e.label}" data-episode="${e.episode_id}">
        ${e.has_thumbnail ? `<img src="/api/episodes/${e.episode_id}/thumbnail.jpg" alt="">` : `<img alt="">`}
        <div>${e.episode_id} · ${e.phase || e.kind}</div>
        <select data-relabel="${e.episode_id}" ${e.kind === "demo" ? "disabled" : ""}>
          <option value="success" ${e.label === "success" ? "selected" : ""}>success</option>
          <option value="failure" ${e.label === "failure" ? "selected" : ""}>failure</option>
        </select>
        <span class="muted">${e.label_source}</span></div>`)
    .join("");
  document.querySelectorAll("select[data-relabel]").forEach((el) =>
    el.addEventListener("change", () => command(`/api/episodes/${el.dataset.relabel}/label`, { label: el.value })));
}

const actions = {
  "btn-reset-done": () => command("/api/reset_done"),
  "btn-success": () => command("/api/label", { success: true }),
  "btn-failure": () => command("/api/label", { success: false }),
  "btn-discard": () => command("/api/discard"),
  "btn-pause": () => command("/api/pause"),
  "btn-resume": () => command("/api/resume"),
  "btn-home": () => command("/api/home"),
  "btn-estop": () => command("/api/estop"),
  "btn-estop-clear": () => command("/api/estop_clear"),
};
for (const [id, run] of Object.entries(actions)) $(id).addEventListener("click", run);

document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "SELECT" || event.repeat) return;
  const key = event.key.toLowerCase();
  if (key === " " || key === "escape") { event.preventDefault(); actions["btn-estop"](); return; }
  const paused = latest?.learner?.learning_paused;
  const byKey = { r: "btn-reset-done", s: "btn-success", f: "btn-failure", d: "btn-discard", h: "btn-home", p: paused ? "btn-resume" : "btn-pause" };
  if (byKey[key] && !$(byKey[key]).disabled) actions[byKey[key]]();
});

refreshStatus(); refreshCamera(); refreshCurve(); refreshEpisodes();
setInterval(refreshStatus, 250);
setInterval(refreshCamera, 200);
setInterval(() => { refreshCurve(); refreshEpisodes(); }, 1000);
