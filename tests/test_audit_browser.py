"""The audit page in a real browser: Playwright drives Debian's Chromium, labels clips with mouse
and keyboard, and the waiting gate resumes."""

import socket
import threading
import time

import pytest
from audit_helpers import audit_cfg, audit_run

from infra.audit_app import create_app
from infra.audit_store import VerdictStore, list_audits, save_sample
from tasks.curate.lib.audit import AuditFailed, audit_gate, open_audit

pytestmark = pytest.mark.slow
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--disable-gpu"]
TOKEN = "tok-reviewer-42"


@pytest.fixture
def browser():
    from chromium import chromium_path  # installs Debian's Chromium when missing, fails clearly if it cannot
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def server():
    import uvicorn

    servers = []

    def start(run_uri):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        srv = uvicorn.Server(uvicorn.Config(create_app(run_uri, {TOKEN: "rita"}), host="127.0.0.1", port=port,
                                            log_level="warning"))
        threading.Thread(target=srv.run, daemon=True).start()
        for _ in range(100):
            if srv.started:
                break
            time.sleep(0.05)
        servers.append(srv)
        return f"http://127.0.0.1:{port}"

    yield start
    for srv in servers:
        srv.should_exit = True


def test_reviewer_labels_clips_and_the_gate_resumes(make_cfg, tmp_path, browser, server):
    ctx, ds = audit_run(make_cfg(), tmp_path, n_clips=4)
    cfg = audit_cfg(gates={"D_540p": {"dataset": "D_540p", "max_bad_rate": 0.3}})
    outcome = {}
    gate = threading.Thread(target=lambda: outcome.setdefault("manifest", audit_gate(ctx, cfg, "D_540p", ds)))
    gate.start()
    for _ in range(100):  # the gate stores its sample before it waits
        if list_audits(ctx.run_uri):
            break
        time.sleep(0.05)
    (sample,) = list_audits(ctx.run_uri)
    base = server(ctx.run_uri)

    page = browser.new_page()
    assert page.goto(f"{base}/").status == 401  # no token, no page
    page.goto(f"{base}/login?token={TOKEN}")
    assert "0 / 4" in page.inner_text("#audits")
    page.click(f"text={sample.gate}")
    page.wait_for_function("document.getElementById('video').readyState >= 2", timeout=15000)  # it plays
    assert page.evaluate("document.getElementById('video').videoWidth") == 64

    def labelled(action, *args):
        before = page.inner_text("#count")
        action(*args)
        page.wait_for_function(f"document.getElementById('count').textContent !== {before!r}")

    labelled(page.click, "#good")  # mouse: clip 1 good
    labelled(page.click, "button[data-reason='black']")  # mouse: clip 2 bad, black
    page.keyboard.press("ArrowLeft")  # back to clip 2: the reviewer changes their mind
    labelled(page.keyboard.press, "g")  # keyboard: clip 2 good (the latest verdict counts)
    labelled(page.keyboard.press, "3")  # keyboard: clip 3 bad, 3rd reason = text
    assert gate.is_alive()  # 3 of 4 labelled: still waiting
    page.keyboard.press("g")  # clip 4 good
    page.wait_for_selector("text=Audit complete")

    gate.join(20)
    assert not gate.is_alive() and outcome["manifest"] == ds  # 1 bad of 4 = 25% < 30%: the gate passed
    latest = VerdictStore(ctx.run_uri, sample.audit_id).latest()
    assert sorted(v.verdict for v in latest.values()) == ["bad", "good", "good", "good"]
    assert [v.reason for v in latest.values() if v.verdict == "bad"] == ["text"]
    assert {v.reviewer for v in latest.values()} == {"rita"}
    page.goto(f"{base}/")
    assert "passed" in page.inner_text("#audits")


def _color(page, selector: str, prop: str = "backgroundColor") -> str:
    return page.eval_on_selector(selector, f"e => getComputedStyle(e).{prop}")


def test_failed_gate_shows_a_banner_and_tolerated_reasons_look_different(make_cfg, tmp_path, browser, server):
    ctx, ds = audit_run(make_cfg(), tmp_path, n_clips=4)
    cfg = audit_cfg(gates={"D_540p": {"dataset": "D_540p", "max_bad_rate": 0.3, "tolerate": ["text"]}})
    sample = open_audit(ctx, cfg, "D_540p", ds)
    base = server(ctx.run_uri)
    page = browser.new_page()
    page.goto(f"{base}/login?token={TOKEN}")
    page.goto(f"{base}/audit/{sample.audit_id}")
    page.wait_for_selector("#list li")
    assert page.is_hidden("#failure")
    tolerated, bad = "button[data-reason='text']", "button[data-reason='black']"
    assert "Tolerated: text" in page.inner_text(tolerated) and "Bad: black" in page.inner_text(bad)
    assert _color(page, tolerated) != _color(page, bad)  # amber, not the red of a counted reason

    def labelled(action, *args):
        before = page.inner_text("#count")
        action(*args)
        page.wait_for_function(f"document.getElementById('count').textContent !== {before!r}")

    labelled(page.click, tolerated)  # clip 1: text, tolerated at this gate
    assert "1 tolerated" in page.inner_text("#count") and page.locator("#list li.tolerated").count() == 1
    labelled(page.click, bad)  # clip 2: black
    labelled(page.click, bad)  # clip 3: black
    assert page.is_hidden("#failure")  # 3 of 4 labelled: not decided yet
    labelled(page.click, "#good")  # clip 4: 2/4 bad = 50%, not below 30%
    page.wait_for_selector("#failure", state="visible")
    assert "Gate FAILED" in page.inner_text("#failure") and "2/4 bad (50.0%)" in page.inner_text("#failure")
    assert _color(page, "#bar") == "rgb(229, 57, 53)"  # the progress bar turns red, not green
    with pytest.raises(AuditFailed):
        audit_gate(ctx, cfg, "D_540p", ds)  # the flow records the failure: the page says the run stopped
    page.goto(f"{base}/audit/{sample.audit_id}")
    assert "The run stopped at this gate" in page.inner_text("#failure") and page.is_visible("#failure")
    page.goto(f"{base}/")
    assert "failed: the run stopped here" in page.inner_text("#audits")


def test_simulated_audit_is_read_only(make_cfg, tmp_path, browser, server):
    ctx, ds = audit_run(make_cfg(), tmp_path, n_clips=4)
    sample = open_audit(ctx, audit_cfg(), "D_540p", ds)
    sample = sample.model_copy(update={"simulated": True, "audit_id": sample.audit_id + "-simulated"})
    save_sample(ctx.run_uri, sample)
    base = server(ctx.run_uri)
    page = browser.new_page()
    page.goto(f"{base}/login?token={TOKEN}")
    page.goto(f"{base}/audit/{sample.audit_id}")
    page.wait_for_selector("text=Simulated audit (read-only)")
    assert page.is_visible("#readonly") and "read-only" in page.inner_text("#readonly").lower()
    buttons = page.locator("#buttons button")
    assert buttons.count() == 9 and all(buttons.nth(i).is_disabled() for i in range(buttons.count()))
    page.keyboard.press("g")
    page.keyboard.press("1")
    page.wait_for_timeout(500)
    assert "not saved" not in page.inner_text("#status")  # no request was made, so no 409 to show
    assert VerdictStore(ctx.run_uri, sample.audit_id).history() == []
