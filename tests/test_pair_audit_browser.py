"""The pairwise audit page in a real browser: Playwright drives Debian's Chromium, plays both videos
of each pending human pair, labels pairs with keyboard and mouse, and a SIGKILLed server loses nothing."""

import socket

import pytest
from audit_helpers import start_audit_server
from pair_audit_helpers import pairs_run
from synthetic_pool import stage_ctx
from test_audit_browser import TOKEN, browser  # noqa: F401 (the browser fixture)

from infra.pair_audit_store import PairVerdictStore, pair_audit_id
from tasks.post.lib.pair_audit import human_labels

pytestmark = pytest.mark.slow


def _start(run_uri: str, port: int):
    return start_audit_server(run_uri, port, {TOKEN: "rita"})


@pytest.fixture
def server():
    procs = []

    def start(run_uri, port):
        procs.append(_start(run_uri, port))
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_reviewer_labels_pairs_and_a_killed_server_loses_nothing(make_cfg, tmp_path, browser, server):  # noqa: F811
    ctx = stage_ctx(make_cfg(), tmp_path)
    manifest, pending = pairs_run(ctx)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    proc = server(ctx.run_uri, port)

    page = browser.new_page()
    assert page.goto(f"{base}/").status == 401  # no token, no page
    page.goto(f"{base}/login?token={TOKEN}")
    assert "0 / 3" in page.inner_text("#pair-audits")
    page.click(f"text={pair_audit_id(manifest)}")
    both = "['video-a','video-b'].every(id => document.getElementById(id).readyState >= 2)"
    page.wait_for_function(both, timeout=15000)  # both play
    assert page.evaluate("[document.getElementById('video-a').videoWidth, document.getElementById('video-b').videoWidth]") == [64, 64]
    page.wait_for_function("+document.body.dataset.loops >= 1", timeout=15000)  # they loop, restarted together
    assert page.evaluate("['video-a','video-b'].every(id => !document.getElementById(id).paused)")
    assert pending[0] in page.inner_text("#pair-id") and "take 0" in page.inner_text("#prompt")

    def submitted(action):
        before = page.inner_text("#count")
        action()
        page.wait_for_function(f"document.getElementById('count').textContent !== {before!r}")

    page.keyboard.press("1")  # keyboard: A is better ...
    assert page.is_disabled("#submit")  # ... but the worse video's failure is still missing
    page.keyboard.press("Enter")
    assert "failure first" in page.inner_text("#status")
    page.keyboard.press("e")  # B: excess motion
    submitted(lambda: page.keyboard.press("Enter"))
    assert pending[1] in page.inner_text("#pair-id")  # the next unlabelled pair comes up

    page.click("#tie")  # mouse: a tie needs no failure
    assert page.is_disabled("button[data-failure='excess motion']")
    submitted(lambda: page.click("#submit"))

    page.click("#better-b")  # mouse: B is better, A shows a physics violation
    page.click("button[data-failure='physics violation']")
    submitted(lambda: page.click("#submit"))
    page.wait_for_selector("text=All pairs labelled")

    page.keyboard.press("ArrowLeft")  # back to the tie: the reviewer changes their mind (latest wins)
    page.wait_for_function(f"document.getElementById('pair-id').textContent === {pending[1]!r}")
    page.keyboard.press("2")
    page.keyboard.press("s")
    submitted(lambda: page.keyboard.press("Enter"))

    expected = {pending[0]: {"label": "a", "failure": "excess motion", "reviewer": "rita"},
                pending[1]: {"label": "b", "failure": "subject distortion", "reviewer": "rita"},
                pending[2]: {"label": "b", "failure": "physics violation", "reviewer": "rita"}}
    assert human_labels(ctx.run_uri, manifest) == expected
    assert len(PairVerdictStore(ctx.run_uri, pair_audit_id(manifest)).history()) == 4  # the full history stays

    proc.kill()  # SIGKILL: no shutdown hook runs
    proc.wait()
    server(ctx.run_uri, port)
    page.goto(f"{base}/")  # the same reviewer session, a new server process
    assert "3 / 3" in page.inner_text("#pair-audits") and "complete" in page.inner_text("#pair-audits")
    page.click(f"text={pair_audit_id(manifest)}")
    page.wait_for_function("document.querySelectorAll('#list li.b').length === 2")
    assert page.evaluate("document.querySelectorAll('#list li.a').length") == 1
    assert human_labels(ctx.run_uri, manifest) == expected
