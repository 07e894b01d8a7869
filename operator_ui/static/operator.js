// Operator page: polls /api/status (4 Hz), the camera (5 Hz), the curve and episodes (1 Hz).
// Every POST carries the X-Operator-Request header: the server refuses state changes without it,
// and a page from another origin cannot send it.
"use strict";
const $ = (id) => document.getElementById(id);
const REQUEST_HEADER = "X-Operator-Request";
let latest = null;

// A ?token= link has left the token in a cookie: take it out of the address bar (and history).
if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", location.pathname);

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(data?.error || `${response.status} ${response.statusText}`);
  return data;
}

// POST a command; reports on the page and answers whether it was accepted.
async function command(path, payload) {
  const name = path.replace("/api/", "");
  let ok = false;
  try {
    const data = await api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", [REQUEST_HEADER]: "1" },
      body: payload === undefined ? "" : JSON.stringify(payload),
    });
    $("message").textContent = `${name}: ok${data?.action ? " (" + data.action + ")" : ""}`;
    ok = true;
  } catch (err) {
    $("message").textContent = `${name}: ${err.message}`;
  }
  refreshStatus();
  return ok;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  return typeof value === "number" ? (Number.isInteger(value) ? String(value) : value.toFixed(digits)) : String(value);
}

function element(tag, attributes = {}, text = "") {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, value);
  if (text) el.textContent = text;
  return el;
}

// Replace a container's children only when what they show changed (no flicker, no lost focus).
function render(container, items, build) {
  const key = JSON.stringify(items);
  if (container.dataset.key === key) return;
  container.dataset.key = key;
  container.replaceChildren(...items.map(build));
}

const DANGER_WARNINGS = ["estop", "control_lost", "fault", "held"];

async function refreshStatus() {
  try {
    latest = await api("/api/status");
    $("teleop-who").textContent = latest.robot?.intervening ? "operator (intervention)" : "policy";
  } catch (err) {
    render($("warnings"), [err.message], (text) =>
      element("div", { class: "warning danger", "data-code": "page_lost" }, `operator page cannot reach its server: ${text}`));
    return;
  }
  const s = latest;
  const prompt = $("prompt");
  prompt.textContent = s.prompt.text;
  prompt.className = `prompt ${s.prompt.level}`;
  prompt.dataset.reason = s.prompt.reason;
  $("state").textContent = s.finished ? `${s.episode_state} (run finished)` : s.episode_state;
  $("episode").textContent = s.episode;
  $("step").textContent = `${s.step} / ${s.max_episode_steps}`;
  $("reward").textContent = fmt(s.reward, 2);
  $("detector").textContent = s.success ? "success" : "not yet";
  render($("state-machine"), s.episode_states.map((name) => [name, name === s.episode_state]), ([name, active]) =>
    element("li", active ? { class: "active" } : {}, name.replaceAll("_", " ")));
  render($("warnings"), s.warnings, (w) =>
    element("div", { class: DANGER_WARNINGS.includes(w.code) ? "warning danger" : "warning", "data-code": w.code }, w.text));

  const labelling = s.episode_state === "awaiting_label" && !s.episode_label;
  const paused = s.episodes_paused || s.learner.learning_paused;
  const idle = ["waiting_for_reset", "ready"].includes(s.episode_state);
  const motorFault = (s.robot.held_reasons || []).includes("motor_error") || Boolean(s.robot.fault);
  const buttonStates = {
    "btn-reset-done": [s.episode_state !== "waiting_for_reset", s.prompt.reason === "reset"],
    // While the episode runs, success / failure end it now with that outcome.
    "btn-success": [!labelling && s.episode_state !== "running", labelling],
    "btn-failure": [!labelling && s.episode_state !== "running", labelling],
    "btn-discard": [!["running", "awaiting_label"].includes(s.episode_state), false],
    "btn-pause": [false, false],  // never disabled: the page may not know every pause (it may have restarted)
    "btn-resume": [false, paused && idle],
    "btn-home": [s.episode_state === "running", false],
    "btn-reboot-motors": [s.episode_state === "running", motorFault],
    "btn-estop-clear": [!s.robot.estopped, Boolean(s.robot.estopped)],
  };
  for (const [id, [disabled, attention]] of Object.entries(buttonStates)) {
    $(id).disabled = disabled;
    $(id).classList.toggle("attention", attention);
  }

  renderClassifier(s);

  const l = s.learner;
  const rows = [
    ["phase", l.phase], ["policy version", l.policy_version], ["critic updates", l.critic_updates],
    ["policy updates", l.policy_updates], ["critic loss", l.critic_loss], ["policy loss", l.policy_loss],
    ["Q (data actions)", l.q_data], ["Q (optimized)", l.q_optimized], ["online episodes", l.online_episodes], ["learning", l.learning_paused ? "paused" : "on"],
  ];
  if (l.phase === "offline" && typeof l.offline_progress === "number") rows.splice(1, 0, ["offline pre-training", `${Math.round(100 * l.offline_progress)} %`]);
  if (l.catching_up) rows.splice(1, 0, ["critic catch-up", `${l.warmup_critic_updates ?? 0} updates (next episode waits)`]);
  render($("learner"), rows.map(([k, v]) => [k, fmt(v)]), ([k, v]) => {
    const row = element("tr");
    row.append(element("th", {}, k), element("td", {}, v));
    return row;
  });
}

function refreshCamera() {
  const img = $("camera");
  const next = new Image();
  next.onload = () => { img.src = next.src; $("camera-status").textContent = ""; };
  next.onerror = () => { $("camera-status").textContent = "no camera image"; };
  next.src = `/api/camera.jpg?t=${Date.now()}`;
}

const PHASE_NAMES = { warmup: "warm-up", online: "online", offline_eval: "offline eval" };  // colours: operator.css

// An axis step of 1, 2 or 5 × 10^k that gives at most `most` ticks.
function tickStep(count, most = 8) {
  for (let scale = 1; ; scale *= 10) for (const step of [1, 2, 5]) if (count / (step * scale) <= most) return step * scale;
}

async function refreshCurve() {
  let curve;
  try { curve = await api("/api/curve"); } catch (err) { return; }
  const svg = $("curve");
  const key = JSON.stringify(curve);
  if (svg.dataset.key === key) return;
  svg.dataset.key = key;
  const W = 400, H = 190, left = 36, right = 12, top = 10, bottom = 40;
  const n = Math.max(curve.points.length, 10);
  const x = (i) => left + ((W - left - right) * (i - 1)) / Math.max(n - 1, 1);
  const y = (v) => H - bottom - (H - top - bottom) * v;
  const parts = [];
  for (const v of [0, 0.5, 1]) {
    parts.push(`<line x1="${left}" y1="${y(v)}" x2="${W - right}" y2="${y(v)}" stroke="${v ? "#e0e0e0" : "#888"}"/>`,
      `<text x="${left - 4}" y="${y(v) + 4}" font-size="10" text-anchor="end">${100 * v}%</text>`);
  }
  const step = tickStep(n);
  for (let i = 1; i <= n; i += i === 1 && step > 1 ? step - 1 : step) {
    parts.push(`<line x1="${x(i)}" y1="${y(0)}" x2="${x(i)}" y2="${y(0) + 4}" stroke="#888"/>`,
      `<text class="tick" x="${x(i)}" y="${y(0) + 15}" font-size="10" text-anchor="middle">${i}</text>`);
  }
  parts.push(`<text x="${(left + W - right) / 2}" y="${H - 6}" font-size="11" text-anchor="middle">episode</text>`);
  const line = curve.points.map((p) => `${x(p.n)},${y(p.moving_average)}`).join(" ");
  parts.push(`<polyline id="curve-line" points="${line}"/>`);
  for (const p of curve.points) {
    parts.push(`<circle class="phase-${p.phase}" cx="${x(p.n)}" cy="${y(p.success ? 1 : 0)}" r="3.5"><title>${p.episode_id}: ${p.success ? "success" : "failure"}</title></circle>`);
  }
  svg.innerHTML = parts.join("");
  $("curve-window").textContent = curve.window;
  svg.dataset.points = String(curve.points.length);
  $("phase-rates").textContent = Object.entries(curve.phases)
    .map(([phase, r]) => `${PHASE_NAMES[phase] || phase}: ${r.successes}/${r.episodes} (${Math.round(100 * r.success_rate)}%)`)
    .join(" · ") + " — dots: success (top) / failure (bottom)";
}

// One card per episode, kept across polls: a card's select keeps its focus and open state, and
// only what changed is written.
function episodeCard(e) {
  const card = element("div", { class: "episode", "data-episode": e.episode_id });
  const img = element("img", { alt: "" });
  if (e.has_thumbnail) img.src = `/api/episodes/${encodeURIComponent(e.episode_id)}/thumbnail.jpg`;
  const select = element("select", { "data-relabel": e.episode_id, "aria-label": `label of ${e.episode_id}` });
  for (const value of ["success", "failure"]) select.append(element("option", { value }, value));
  if (e.aborted) select.append(element("option", { value: "aborted" }, "aborted"));
  if (e.kind === "demo") { select.disabled = true; select.title = "demonstrations are read-only"; }
  if (e.aborted) {
    select.disabled = true;
    select.title = `aborted by a safety hold (${e.abort_reason || "?"}): kept for inspection, never trained on`;
    card.classList.add("aborted");
  }
  select.addEventListener("change", async () => {
    const ok = await command(`/api/episodes/${encodeURIComponent(e.episode_id)}/label`, { label: select.value });
    if (!ok) select.value = card.dataset.label;  // refused: show the stored label again
  });
  const title = `${e.episode_id} · ${e.phase || e.kind}` + (e.aborted ? ` · aborted (${e.abort_reason || "?"})` : "");
  const replayButton = element("button", { "data-replay": e.episode_id, title: "scrub through the stored steps" }, "Replay");
  replayButton.addEventListener("click", () => openReplay(e.episode_id));
  card.append(img, element("div", {}, title), select, replayButton, element("span", { class: "muted" }));
  return card;
}

// Episode replay: a stored episode's frames with, per step, who acted, the action, the reward and
// the critic's Q of the executed action (as the learner stored it).
let replay = null;

async function openReplay(episodeId) {
  try { replay = await api(`/api/episodes/${encodeURIComponent(episodeId)}/replay`); } catch (err) {
    $("message").textContent = `replay: ${err.message}`;
    return;
  }
  $("replay").hidden = false;
  $("replay-title").textContent = `${replay.episode_id} · ${replay.label} (${replay.label_source}) · ${replay.steps} steps`;
  const slider = $("replay-step");
  // One more position than steps when the final state's frame is stored: the outcome.
  slider.max = String(replay.frames > replay.steps ? replay.steps : Math.max(replay.steps - 1, 0));
  slider.value = "0";
  drawReplayTrace();
  showReplayStep(0);
  $("replay").scrollIntoView({ block: "nearest" });
}

function showReplayStep(t) {
  if (!replay) return;
  const frames = replay.frames;
  const frame = $("replay-frame");
  if (frames > 0) frame.src = `/api/episodes/${encodeURIComponent(replay.episode_id)}/frames/${Math.min(t, frames - 1)}.jpg`;
  else frame.removeAttribute("src");
  frame.alt = frames > 0 ? `frame ${t}` : "this episode stored no frames (image policies, or episodes.record_frames)";
  const final = t >= replay.steps;
  $("replay-step-text").textContent = !replay.steps ? "no steps" : final ? "final state" : `${t + 1} of ${replay.steps}`;
  $("replay-source").textContent = final ? "–" : replay.sources[t] ?? "–";
  $("replay-action").textContent = replay.actions[t] ? replay.actions[t].map((v) => v.toFixed(2)).join(" ") : "–";
  $("replay-reward").textContent = fmt(replay.rewards[t], 2);
  $("replay-q").textContent = final ? "–" : replay.q_values?.[t] !== undefined ? replay.q_values[t].toFixed(3) : "not stored";
  const marker = $("replay-trace").querySelector("line");
  if (marker && replay.steps) {
    const x = (400 * (t + 0.5)) / replay.steps;
    marker.setAttribute("x1", x); marker.setAttribute("x2", x);
  }
}

function drawReplayTrace() {
  const svg = $("replay-trace");
  const ns = "http://www.w3.org/2000/svg";
  const parts = [];
  const width = 400 / Math.max(replay.steps, 1);
  replay.sources.forEach((source, t) => {
    if (source !== "intervention") return;
    const rect = document.createElementNS(ns, "rect");
    Object.entries({ class: "intervention", x: t * width, y: 0, width, height: 80 }).forEach(([k, v]) => rect.setAttribute(k, v));
    parts.push(rect);
  });
  if (replay.q_values && replay.q_values.length) {
    const low = Math.min(...replay.q_values), high = Math.max(...replay.q_values);
    const span = high - low || 1;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", replay.q_values.map((q, t) => `${(t + 0.5) * width},${75 - (70 * (q - low)) / span}`).join(" "));
    parts.push(line);
  }
  const marker = document.createElementNS(ns, "line");
  Object.entries({ x1: 0, x2: 0, y1: 0, y2: 80 }).forEach(([k, v]) => marker.setAttribute(k, v));
  parts.push(marker);
  svg.replaceChildren(...parts);
}

$("replay-step").addEventListener("input", (event) => showReplayStep(Number(event.target.value)));
$("replay-close").addEventListener("click", () => { $("replay").hidden = true; replay = null; });

async function refreshEpisodes() {
  let episodes;
  try { episodes = await api("/api/episodes?limit=12"); } catch (err) { return; }
  const container = $("episodes");
  const cards = new Map([...container.children].map((card) => [card.dataset.episode, card]));
  episodes.forEach((e, index) => {
    const card = cards.get(e.episode_id) || episodeCard(e);
    cards.delete(e.episode_id);
    if (container.children[index] !== card) container.insertBefore(card, container.children[index] || null);
    if (card.dataset.label !== e.label) {
      card.dataset.label = e.label;
      card.className = `episode ${e.label}`;
      card.querySelector("select").value = e.label;
    }
    card.querySelector("span").textContent = e.label_source;
  });
  for (const stale of cards.values()) stale.remove();
}

// The reward detector in use and the success classifier in shadow mode: its agreement with the
// labels since it was trained decides when the operator switches to it (and back).
function renderClassifier(s) {
  const c = s.classifier, d = s.reward_detector;
  const percent = (v) => (typeof v === "number" ? `${Math.round(100 * v)} %` : "–");
  const model = d?.detector === "classifier" && d.model_version ? ` v${d.model_version}` : "";
  const rows = [["in use", d ? d.detector + model + (d.error ? ` (switch failed: ${d.error})` : "") : "–"]];
  if (c) {
    rows.push(["classifier", c.version ? `v${c.version}, trained on ${c.trained_episodes} episodes` : "not trained yet"]);
    if (c.held_out) rows.push(["held out", `precision ${percent(c.held_out.precision)}, recall ${percent(c.held_out.recall)}`]);
    rows.push(["agreement", c.judged ? `${c.agreed}/${c.judged} labelled episodes (${percent(c.agreement)}), ${c.false_positives} false positives` : "no labelled episode since training"]);
    if (c.last_error) rows.push(["problem", c.last_error]);
  }
  render($("classifier"), rows, ([k, v]) => {
    const row = element("tr");
    row.append(element("th", {}, k), element("td", {}, v));
    return row;
  });
  render($("classifier-disagreements"), (c?.disagreements || []).map((v) => [v.episode_id, v.label, v.predicted, v.score]),
    ([id, label, predicted, score]) => element("li", { "data-episode": id },
      `${id}: labelled ${label}, classifier says ${predicted ? "success" : "failure"} (score ${score.toFixed(2)})`));
  // Enabled without the shadow node too (a model trained with `parl-robot reward train`): the reward
  // node says on reward/detector when it cannot load one.
  $("btn-use-classifier").disabled = !d || d.detector === "classifier";
  $("btn-use-positions").disabled = d?.detector === "positions";
}

function labelOrEndNow(success) {
  const body = { success, episode: latest?.episode };
  return command(latest?.episode_state === "running" ? "/api/end_now" : "/api/label", body);
}

const actions = {
  "btn-reset-done": () => command("/api/reset_done"),
  // The label names the episode this page shows: the server refuses it for any other episode.
  "btn-success": () => labelOrEndNow(true),
  "btn-failure": () => labelOrEndNow(false),
  "btn-discard": () => command("/api/discard"),
  "btn-pause": () => command("/api/pause"),
  "btn-resume": () => command("/api/resume"),
  "btn-home": () => command("/api/home"),
  "btn-reboot-motors": () => {
    if (confirm("Reboot the motors? Motors in error lose torque while they reboot: support the arm first.")) command("/api/reboot_motors");
  },
  "btn-estop": () => command("/api/estop"),
  "btn-estop-clear": () => command("/api/estop_clear"),
  "btn-use-classifier": () => command("/api/reward_detector", { detector: "classifier" }),
  "btn-use-positions": () => command("/api/reward_detector", { detector: "positions" }),
};
for (const [id, run] of Object.entries(actions)) $(id).addEventListener("click", run);

// Teleop: while the operator has taken over, held keys (or a gamepad) make the action sent to the
// control node at the control rate; the control node executes it in place of the policy's.
const TELEOP_KEYS = { w: [0, 1], s: [0, -1], a: [1, 1], d: [1, -1], q: [2, 1], e: [2, -1], j: [5, 1], l: [5, -1] };
const teleop = { active: false, held: new Set(), gripperOpen: true, timer: null };

function teleopAction() {
  const action = [0, 0, 0, 0, 0, 0, teleop.gripperOpen ? 1 : -1];
  for (const key of teleop.held) { const [dim, sign] = TELEOP_KEYS[key]; action[dim] += sign; }
  const pad = navigator.getGamepads ? [...navigator.getGamepads()].find((g) => g) : null;
  if (pad) {  // standard mapping: left stick x/y, right stick y -> z, right stick x -> yaw
    const dead = (v) => (Math.abs(v) < 0.1 ? 0 : v);
    action[0] += -dead(pad.axes[1] || 0); action[1] += -dead(pad.axes[0] || 0);
    action[2] += -dead(pad.axes[3] || 0); action[5] += -dead(pad.axes[2] || 0);
  }
  return action.map((v) => Math.max(-1, Math.min(1, v)));
}

async function sendTeleop(takeover) {
  const action = teleopAction();
  $("teleop-action").textContent = takeover ? `action [${action.map((v) => v.toFixed(1)).join(", ")}]` : "";
  try {
    await api("/api/teleop", { method: "POST", headers: { "Content-Type": "application/json", [REQUEST_HEADER]: "1" },
                               body: JSON.stringify({ action, takeover }) });
  } catch (err) { $("message").textContent = `teleop: ${err.message}`; }
}

function setTakeover(active) {
  teleop.active = active;
  teleop.held.clear();
  if (active) {
    teleop.gripperOpen = (latest?.robot?.gripper_open ?? 1) > 0.5;
    const period = 1000 / (latest?.control_rate_hz || 5);
    teleop.timer = setInterval(() => sendTeleop(true), period);
  } else {
    clearInterval(teleop.timer);
    sendTeleop(false);
  }
  $("btn-takeover").textContent = active ? "Hand back (T)" : "Take over (T)";
  $("btn-takeover").classList.toggle("attention", active);
}
$("btn-takeover").addEventListener("click", () => setTakeover(!teleop.active));
document.addEventListener("keyup", (event) => teleop.held.delete(event.key.toLowerCase()), true);

// Shortcuts, in the capture phase so no control can swallow them. Space and Esc e-stop from
// anywhere, even with a select or button focused; letters also work with a select focused (and
// do not change its value), but not while typing into a text field.
document.addEventListener("keydown", (event) => {
  const key = event.key.toLowerCase();
  if (key === " " || key === "escape") {
    event.preventDefault();
    event.stopPropagation();
    if (!event.repeat) actions["btn-estop"]();
    return;
  }
  if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return;
  if (["INPUT", "TEXTAREA"].includes(event.target.tagName) || event.target.isContentEditable) return;
  // A focused dropdown (an episode's label): letters neither pick an option (no silent relabel) nor
  // act as shortcuts (S / F would end the running episode); arrows and Enter still work in it.
  if (event.target.tagName === "SELECT") { if (key.length === 1) event.preventDefault(); return; }
  if (key === "t") { event.preventDefault(); setTakeover(!teleop.active); return; }
  if (teleop.active && (TELEOP_KEYS[key] || key === "g")) {  // driving: these keys move the arm
    event.preventDefault();
    if (key === "g") teleop.gripperOpen = !teleop.gripperOpen; else teleop.held.add(key);
    return;
  }
  const paused = latest?.episodes_paused || latest?.learner?.learning_paused;
  const byKey = { r: "btn-reset-done", s: "btn-success", f: "btn-failure", d: "btn-discard", h: "btn-home", p: paused ? "btn-resume" : "btn-pause" };
  if (!byKey[key]) return;
  event.preventDefault();
  if (!$(byKey[key]).disabled) actions[byKey[key]]();
}, true);
// A focused button clicks on Space's keyup: Space is the e-stop, never that click.
document.addEventListener("keyup", (event) => { if (event.key === " ") event.preventDefault(); }, true);

refreshStatus(); refreshCamera(); refreshCurve(); refreshEpisodes();
setInterval(refreshStatus, 250);
setInterval(refreshCamera, 200);
setInterval(() => { refreshCurve(); refreshEpisodes(); }, 1000);
