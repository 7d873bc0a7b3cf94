"""The viewer in a real headless Chromium (Debian's ``chromium``, driven by Playwright; no browser download)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clew.viz.export import export_html
from clew.viz.server import make_server
from tests.viz.conftest import ATTR, IMG, SCRIPT, TOKEN_ADV, XSS_ACTION, XSS_OBSERVATION

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium executable on PATH (apt-get install chromium)")
NEG, POS = (33, 102, 172), (178, 24, 43)


def credit_rgb(adv: float, scale: float) -> str:
    """The viewer's diverging scale: white at 0, blue at -scale, red at +scale (JS Math.round = floor(x + 0.5))."""
    t = max(-1.0, min(1.0, adv / scale)) if scale > 0 else 0.0
    end = NEG if t < 0 else POS
    c = [int(255 + (e - 255) * abs(t) + 0.5) for e in end]
    return f"rgb({c[0]}, {c[1]}, {c[2]})"


@pytest.fixture(scope="module")
def base_url(run_dir: Path) -> Iterator[str]:
    srv = make_server([run_dir])
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """A page under the server's Content-Security-Policy; page errors fail the test."""
    context = browser.new_context()
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    yield tab
    context.close()
    assert errors == []


def open_route(page: Any, url: str, route: str) -> None:
    page.goto(url + route)
    page.wait_for_selector(f'body[data-ready="{route}"]', state="attached", timeout=10_000)


def test_runs_page_draws_curves_and_eval_intervals(page: Any, base_url: str) -> None:
    open_route(page, base_url, "#/runs")
    assert page.locator("tr[data-run='small-run']").count() == 1
    assert page.locator("figure[data-panel='success rate'] polyline.series").count() == 1
    assert page.locator("figure[data-panel='success rate'] line.interval").count() == 2
    marker = page.locator("figure[data-panel='success rate'] line.monitor-marker")  # the monitor tripped here
    assert marker.count() == 1 and marker.get_attribute("data-detector") == "length_drift"


def test_groups_page_lists_episodes_and_filters(page: Any, base_url: str) -> None:
    open_route(page, base_url, "#/run/small-run/it/2")
    assert page.locator("section.group").count() == 3 and page.locator(".tile").count() == 5
    open_route(page, base_url, "#/run/small-run/it/2?status=error&sort=group&q=")
    assert page.locator(".tile").count() == 1 and page.locator(".tile .err").inner_text() == "boom <b>"


@pytest.mark.parametrize(("iteration", "label"), [(1, "infra error (left out of credit)"), (2, "policy error")])
def test_an_errored_episode_shows_its_failure_type(page: Any, base_url: str, iteration: int, label: str) -> None:
    kind = label.split()[0]
    open_route(page, base_url, f"#/run/small-run/it/{iteration}?status={kind}_error&sort=group&q=")
    assert page.locator(f".tile.errored.{kind}").count() == 1 and label in page.locator(".tile").inner_text()
    open_route(page, base_url, f"#/run/small-run/it/{iteration}/ep/2")
    assert label in page.locator(".episode-head").inner_text()
    assert page.locator(".episode-head").inner_text().endswith(": boom <b>")


@pytest.mark.parametrize("iteration", [1, 2])
def test_token_colour_matches_its_stored_advantage(page: Any, base_url: str, iteration: int) -> None:
    open_route(page, base_url, f"#/run/small-run/it/{iteration}/ep/1")
    # v2: episode 1's tokens are TOKEN_ADV[3:8]; v1: its turn advantages (-0.5, -2.0, -0.5) repeated per token
    advantages = list(TOKEN_ADV[3:8]) if iteration == 2 else [-0.5, -0.5, -2.0, -2.0, -0.5]
    scale = max(abs(a) for a in advantages)
    token = page.locator(".turn[data-turn='1'] .tok[data-index='1']")
    assert float(token.get_attribute("data-adv")) == advantages[3]
    assert token.evaluate("e => getComputedStyle(e).backgroundColor") == credit_rgb(advantages[3], scale)
    assert float(page.locator(".legend").get_attribute("data-scale")) == scale
    token.hover()
    assert "advantage " + f"{advantages[3]:.4f}" in page.locator("#tip").inner_text()


def test_episode_tokens_carry_their_numbers(page: Any, base_url: str) -> None:
    open_route(page, base_url, "#/run/small-run/it/2/ep/1")
    first = page.locator(".turn[data-turn='0'] .tok[data-index='0']")
    assert [first.get_attribute(a) for a in ("data-id", "data-text", "data-logprob", "data-entropy")] == [
        "5",
        "go",
        "-0.1",
        "0.3",
    ]
    assert page.locator(".prompt").inner_text() == "<bos> Hello world"
    assert (
        page.locator(".turn[data-turn='0'] details.anchor summary")
        .inner_text()
        .startswith("anchor state: 2 other turns")
    )


def test_a_context_edit_is_marked_as_such(page: Any, base_url: str) -> None:
    open_route(page, base_url, "#/run/small-run/it/2/ep/3")
    assert page.locator(".turn.edit .turn-head strong").inner_text() == "turn 0 · summary (context edit)"
    open_route(page, base_url, "#/run/small-run/it/2/ep/1")
    assert page.locator(".turn.edit").count() == 0


def test_compare_marks_the_first_divergence(page: Any, base_url: str) -> None:
    open_route(page, base_url, "#/run/small-run/it/2/cmp/0/1")
    assert page.locator("#first-divergence").inner_text() == "first divergence: turn 1"
    assert page.locator(".pair[data-turn='1'] .turn.diverge").count() == 2


@pytest.mark.parametrize(
    "route",
    [
        "#/run/small-run/it/2/ep/1",
        "#/run/small-run/it/2/cmp/0/1",
        "#/run/small-run/it/2?status=all&sort=group&q=onerror",
    ],
)
def test_xss_payloads_are_text(browser: Any, base_url: str, route: str) -> None:
    """With the CSP bypassed, so that escaping alone is what is tested."""
    context = browser.new_context(bypass_csp=True)
    tab = context.new_page()
    open_route(tab, base_url, route)
    text = tab.locator("#app").inner_text()
    if "/ep/" in route or "/cmp/" in route:
        assert XSS_ACTION in text and XSS_OBSERVATION in text and SCRIPT in text
    else:
        assert "1 matching turns" in text
    tab.mouse.move(5, 5)
    for token in tab.locator(".tok").all():
        token.hover()
    assert tab.evaluate("window.__pwned") is None
    assert tab.locator("#app img, #app script, [onmouseover], [onerror]").count() == 0
    context.close()


def test_traversal_request_is_refused(page: Any, base_url: str) -> None:
    # Chromium resolves ``../`` and ``%2e%2e/`` itself (the request becomes /pyproject.toml: not a viewer file)
    assert page.goto(base_url + "static/../../pyproject.toml").status == 404
    assert page.goto(base_url + "static/%2e%2e/%2e%2e/pyproject.toml").status == 404
    # what reaches the server still encoded is refused
    assert page.goto(base_url + "static/..%2f..%2fpyproject.toml").status == 403
    assert page.goto(base_url + "api/runs/small-run/..%2f..%2f..%2fpyproject.toml").status == 403


def test_export_opens_from_file(browser: Any, run_dir: Path, tmp_path: Path) -> None:
    out = export_html(run_dir, 2, tmp_path / "iteration-2.html")
    context = browser.new_context()
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(out.as_uri())
    tab.wait_for_selector('body[data-ready="#/"]', state="attached", timeout=10_000)
    assert tab.locator("section.group").count() == 3
    open_route(tab, out.as_uri(), "#/run/small-run/it/2/ep/1")
    assert XSS_OBSERVATION in tab.locator("#app").inner_text() and IMG in tab.locator("#app").inner_text()
    token = tab.locator(".turn[data-turn='1'] .tok[data-index='0']")
    assert token.evaluate("e => getComputedStyle(e).backgroundColor") == credit_rgb(TOKEN_ADV[5], 2.0)
    open_route(tab, out.as_uri(), "#/run/small-run/it/2?status=all&sort=group&q=onerror")
    assert tab.locator(".tile").count() == 2 and ATTR not in tab.locator("#app").inner_text()
    open_route(tab, out.as_uri(), "#/run/small-run/it/2?status=policy_error&sort=group&q=")
    assert tab.locator(".tile.errored.policy").count() == tab.locator(".tile").count() == 1
    assert tab.evaluate("window.__pwned") is None and errors == []
    context.close()
