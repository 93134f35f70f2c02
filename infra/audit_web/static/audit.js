// One clip at a time; every verdict is POSTed (and stored durably) the moment it is given.
const auditId = document.body.dataset.audit;
const readOnly = document.body.dataset.simulated === "true";  // a simulated audit takes no human verdict
const manual = document.body.dataset.kind === "manual";
let clips = [], current = 0;
let lastState = { labelled: 0, total: 0, bad: 0, tolerated: {}, complete: false, passed: false };

const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) throw new Error(`${response.status}: ${(await response.json()).detail}`);
  return response.json();
}

function render(state) {
  const tolerated = Object.values(state.tolerated || {}).reduce((a, b) => a + b, 0);
  const failed = state.complete && !state.passed && !manual;
  $("bar").style.width = `${(100 * state.labelled) / Math.max(state.total, 1)}%`;
  $("progress").className = failed ? "failed" : (state.complete ? "complete" : "");
  $("count").textContent = `${state.labelled} / ${state.total} labelled, ${state.bad} bad` +
    (tolerated ? `, ${tolerated} tolerated` : "");
  $("failure").hidden = !failed;
  if (failed) $("failure-count").textContent =
    `${state.bad}/${state.labelled} bad (${(100 * state.bad_rate).toFixed(1)}%)`;
  if (state.complete && !readOnly) $("status").textContent = failed
    ? "Audit complete: the gate FAILS with these verdicts."
    : "Audit complete: the waiting gate resumes now.";
  const list = $("list");
  list.replaceChildren(...clips.map((c, i) => {
    const li = document.createElement("li");
    li.textContent = c.clip_id.slice(0, 12);
    li.className = [c.verdict || "", c.disagree ? "disagree" : "", i === current ? "current" : ""].join(" ");
    li.dataset.reason = c.reason || "";
    li.onclick = () => show(i);
    return li;
  }));
}

function show(i) {
  current = Math.max(0, Math.min(i, clips.length - 1));
  const c = clips[current];
  $("video").src = `/clip/${auditId}/${c.clip_id}`;
  $("clip-id").textContent = c.clip_id;
  $("position").textContent = `(${current + 1} of ${clips.length})`;
  $("caption").textContent = [c.category, c.caption].filter(Boolean).join(": ");
  $("reviews").textContent = c.reviews.length
    ? (c.disagree ? "Reviewers disagree: " : "Verdicts: ") +
      c.reviews.map((r) => `${r.reviewer} ${r.verdict}${r.reason ? " (" + r.reason + ")" : ""}`).join("; ")
    : "";
  render(lastState);
}

async function judge(verdict, reason = null) {
  if (readOnly || !clips.length) return;
  const c = clips[current];
  try {
    lastState = await api(`/api/audit/${auditId}/verdicts`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ clip_id: c.clip_id, verdict, reason }),
    });
    const fresh = await api(`/api/audit/${auditId}`);  // every reviewer's verdicts, under the rule
    clips = fresh.clips;
    $("status").textContent = `saved: ${c.clip_id.slice(0, 12)} ${verdict}${reason ? " (" + reason + ")" : ""}`;
    const next = clips.findIndex((x, i) => i > current && !x.mine);
    show(next >= 0 ? next : current);
  } catch (err) {
    $("status").textContent = `not saved: ${err.message}`;
  }
}

$("good").onclick = () => judge("good");
document.querySelectorAll("button.bad").forEach((b) => { b.onclick = () => judge("bad", b.dataset.reason); });
const reasons = [...document.querySelectorAll("button.bad")].map((b) => b.dataset.reason);

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA") return;
  if (e.key === "g" || e.key === "G") judge("good");
  else if (/^[1-9]$/.test(e.key) && reasons[+e.key - 1]) judge("bad", reasons[+e.key - 1]);
  else if (e.key === "ArrowRight") show(current + 1);
  else if (e.key === "ArrowLeft") show(current - 1);
  else if (e.key === " ") { const v = $("video"); v.paused ? v.play() : v.pause(); e.preventDefault(); }
});

api(`/api/audit/${auditId}`).then((data) => {
  clips = data.clips; lastState = data.state;
  const first = clips.findIndex((c) => !c.mine);
  show(first >= 0 ? first : 0);
  if (readOnly) $("status").textContent = "Simulated audit (read-only): verdicts come from the corpus truth.";
}).catch((err) => { $("status").textContent = err.message; });
