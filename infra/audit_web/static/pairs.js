// One pair at a time: both videos start together and restart together once both have ended, so the
// reviewer always compares the same moments. A verdict is POSTed (and stored durably) on submit.
const auditId = document.body.dataset.audit;
const $ = (id) => document.getElementById(id);
const videos = [$("video-a"), $("video-b")];
const failureButtons = [...document.querySelectorAll("#failures button")];
let pairs = [], current = 0, choice = { label: null, failure: null }, ended = new Set(), loading = 0;
let lastState = { labelled: 0, total: 0, better_a: 0, better_b: 0, ties: 0 };

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) throw new Error(`${response.status}: ${JSON.stringify((await response.json()).detail)}`);
  return response.json();
}

function ready(video) {
  return new Promise((resolve) => {
    if (video.readyState >= 3) resolve();
    else video.addEventListener("canplay", resolve, { once: true });
  });
}

function restart() {
  ended.clear();
  videos.forEach((v) => { v.currentTime = 0; });
  Promise.all(videos.map((v) => v.play())).catch(() => {});
}

videos.forEach((v) => v.addEventListener("ended", () => {
  ended.add(v);
  if (ended.size === videos.length) {
    document.body.dataset.loops = String(+document.body.dataset.loops + 1);
    restart();
  }
}));

function render(state) {
  $("bar").style.width = `${(100 * state.labelled) / Math.max(state.total, 1)}%`;
  $("count").textContent = `${state.labelled} / ${state.total} labelled (A ${state.better_a}, B ${state.better_b}, tie ${state.ties})`;
  if (state.complete) $("status").textContent = "All pairs labelled: the reward stage can use them now.";
  $("list").replaceChildren(...pairs.map((p, i) => {
    const li = document.createElement("li");
    li.textContent = p.pair_id;
    li.className = [p.label || "", i === current ? "current" : ""].join(" ");
    li.onclick = () => show(i);
    return li;
  }));
}

function choose(label, failure) {
  if (label !== undefined) choice = { label, failure: null };
  if (failure !== undefined && (choice.label === "a" || choice.label === "b")) choice.failure = failure;
  document.querySelectorAll("#buttons button").forEach((b) => b.classList.toggle("chosen", b.dataset.label === choice.label));
  const needsFailure = choice.label === "a" || choice.label === "b";
  $("worse").textContent = needsFailure ? `The worse video (${choice.label === "a" ? "B" : "A"}) fails by:` : "The worse video fails by:";
  failureButtons.forEach((b) => {
    b.disabled = !needsFailure;
    b.classList.toggle("chosen", needsFailure && b.dataset.failure === choice.failure);
  });
  $("submit").disabled = !(choice.label === "tie" || (needsFailure && choice.failure));
}

async function show(i) {
  current = Math.max(0, Math.min(i, pairs.length - 1));
  const p = pairs[current], token = ++loading;
  choose(p.label, p.failure);
  $("prompt").textContent = p.prompt || "";
  $("kind").textContent = p.kind_text || "";
  $("pair-id").textContent = p.pair_id;
  $("position").textContent = `(${current + 1} of ${pairs.length})`;
  videos.forEach((v, k) => { v.pause(); v.src = `/pair-video/${auditId}/${p.pair_id}/${"ab"[k]}`; v.load(); });
  render(lastState);
  await Promise.all(videos.map(ready));
  if (token === loading) restart(); // synchronised start: neither plays before both can
}

async function submit() {
  if (!pairs.length) return;
  const p = pairs[current];
  if ($("submit").disabled) {
    $("status").textContent = choice.label ? "pick the worse video's failure first" : "pick Better A, Better B or Tie first";
    return;
  }
  try {
    lastState = await api(`/api/pairs/${auditId}/verdicts`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ pair_id: p.pair_id, label: choice.label, failure: choice.failure }),
    });
    p.label = choice.label; p.failure = choice.failure;
    $("status").textContent = `saved: ${p.pair_id} ${p.label}${p.failure ? " (worse: " + p.failure + ")" : ""}`;
    const next = pairs.findIndex((x, i) => i > current && !x.label);
    if (next >= 0) show(next); else render(lastState);
  } catch (err) {
    $("status").textContent = `not saved: ${err.message}`;
  }
}

document.querySelectorAll("#buttons button").forEach((b) => { b.onclick = () => choose(b.dataset.label); });
failureButtons.forEach((b) => { b.onclick = () => choose(undefined, b.dataset.failure); });
$("submit").onclick = submit;
// A clicked button keeps no focus: Space / Enter belong to the page's keys, not to the last button.
document.addEventListener("click", (e) => { if (e.target.tagName === "BUTTON") e.target.blur(); });
const failureKeys = Object.fromEntries(failureButtons.map((b) => [b.dataset.key, b.dataset.failure]));

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA" || e.ctrlKey || e.metaKey || e.altKey) return;
  const key = e.key.toLowerCase();
  if (key === "1") choose("a");
  else if (key === "2") choose("b");
  else if (key === "0") choose("tie");
  else if (failureKeys[key]) choose(undefined, failureKeys[key]);
  else if (key === "enter") { submit(); e.preventDefault(); }
  else if (key === "arrowright") show(current + 1);
  else if (key === "arrowleft") show(current - 1);
  else if (key === "r") restart();
  else if (key === " ") {
    if (videos[0].paused) Promise.all(videos.map((v) => v.play())).catch(() => {}); else videos.forEach((v) => v.pause());
    e.preventDefault();
  }
});

api(`/api/pairs/${auditId}`).then((data) => {
  pairs = data.pairs; lastState = data.state;
  const first = pairs.findIndex((p) => !p.label);
  show(first >= 0 ? first : 0);
}).catch((err) => { $("status").textContent = err.message; });
