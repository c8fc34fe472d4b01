"""The status page at `/` in real headless Chromium, on a real worker (Tansu + `up`).

Needs Debian's `chromium` (driven by playwright's Python package, never a downloaded
browser); `make test` installs it. Without it this test fails rather than skips.
"""

from __future__ import annotations

import shutil

import pytest
from live_stack import Stack

from streams.embedded import EmbeddedBroker, ensure_topics
from streams.supervisor import WorkerProcess

pytestmark = pytest.mark.integration

INSTALL_CHROMIUM = "apt-get install -y chromium"
ITEMS = {
    "sf1": ("Interstellar", "Astronauts travel through a wormhole near a black hole in space."),
    "sf2": ("The Martian", "An astronaut stranded on Mars grows potatoes to survive."),
    "sf3": ("Alien invasion", "Spaceships from another galaxy attack the planet."),
    "sf4": ("<b>Moon</b> & <i>stars</i>", "A lunar base crew watches a comet cross the galaxy."),
    "ck1": ("Sourdough bread", "Bake a crusty sourdough loaf with a simple starter."),
    "ck2": ("红烧肉", "家常红烧肉的做法，五花肉慢炖入味。"),
    "ck3": ("Pasta carbonara", "Cook spaghetti with eggs, cheese and pancetta."),
    "fi1": ("Stock market today", "Shares fell as investors worried about interest rates."),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, e5_exported):
    tmp = tmp_path_factory.mktemp("status-page")
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, 2)
        worker = WorkerProcess(broker.bootstrap, tmp / "data").start()
        try:
            s = Stack(broker, worker)
            s.send(
                [
                    ("items", i, {"item_id": i, "title": t, "body": b, "tags": [i[:2]]})
                    for i, (t, b) in ITEMS.items()
                ]
            )
            s.clicks("alice", ["sf1", "sf2", "sf3"])
            yield s
        finally:
            worker.stop()


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's browser, checked before the stack starts: missing, the test fails."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(f"Debian chromium is not installed: run `{INSTALL_CHROMIUM}` (make test does)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed: run `.venv/bin/pip install -e '.[dev]'`")
    return path


@pytest.fixture
def browser(chromium):
    # after `stack`: playwright's sync API keeps an event loop running in this thread,
    # where the stack's set-up calls asyncio.run
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield b
        finally:
            b.close()


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_status_page_shows_throughput_and_a_users_live_recommendations(
    chromium, stack, browser, tmp_path
):
    url = stack.worker.url
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(15_000)
    requests: list[str] = []
    js_errors: list[str] = []
    csp: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: js_errors.append(str(e)))

    def on_console(message) -> None:
        if "Content Security Policy" in message.text:
            csp.append(message.text)

    page.on("console", on_console)
    shot = tmp_path / "status.png"
    try:
        response = page.goto(url + "/")
        assert response is not None and response.status == 200
        assert response.headers["content-type"].startswith("text/html")

        # throughput: the consumed total from /healthz, then events/s from a second poll
        consumed = page.locator('#throughput [data-stat="consumed"]')
        page.wait_for_function(
            "() => Number(document.querySelector('#throughput').dataset.consumed) > 0"
        )
        assert _number(consumed.inner_text()) == stack.worker.health()["totals"]["consumed"]
        assert _number(page.inner_text('#throughput [data-stat="applied"]')) >= 3
        page.wait_for_function(
            "() => /^\\d/.test(document.querySelector('[data-stat=\"rate\"]').textContent)"
        )

        # a user: interests and recommendations, without the items they clicked
        page.fill("#user", "alice")
        page.click("#search button")
        page.wait_for_selector("#recs tbody tr")
        page.wait_for_selector("#interests .terms li .term")
        assert page.inner_text("#interests .terms li .term").strip()
        assert "click 3" in page.inner_text("#interests")
        rows = page.locator("#recs tbody tr")
        recommended = [rows.nth(i).get_attribute("data-item") for i in range(rows.count())]
        assert "sf4" in recommended and not {"sf1", "sf2", "sf3"} & set(recommended), recommended
        assert page.inner_text("#error") == "" and page.inner_text("#cold-start") == ""
        # titles are text, never markup
        row = page.locator('#recs tbody tr[data-item="sf4"]')
        assert "<b>Moon</b> & <i>stars</i>" in row.inner_text()
        assert row.locator("b, i").count() == 0
        why = row.locator("td").nth(5).inner_text()
        assert why.split(":")[0] in ("word", "sentence", "document"), why

        # it refreshes by itself: new clicks show up without another search
        stack.clicks("alice", ["ck1", "ck2", "ck3"])
        page.wait_for_function(
            "() => document.querySelector('#interests').textContent.includes('click 6')"
        )
        page.wait_for_function("() => !document.querySelector('#recs tbody tr[data-item=\"ck1\"]')")
        page.wait_for_function(  # and the worker's totals keep up too
            f"() => Number(document.querySelector('#throughput').dataset.consumed) >= {stack.sent}"
        )
        page.screenshot(path=shot, full_page=True)

        # the API's error text for a 4xx, and no rows
        page.fill("#user", "bad id")
        page.press("#user", "Enter")
        page.wait_for_function(
            "() => document.querySelector('#error').textContent.includes('user_id must be')"
        )
        assert page.locator("#recs tbody tr").count() == 0

        # an unknown user: said so, and popular items under a cold-start notice
        page.fill("#user", "nobody-yet")
        page.click("#search button")
        page.wait_for_selector("#recs tbody tr")
        assert "unknown user 'nobody-yet'" in page.inner_text("#error")
        assert "Cold start (unknown user)" in page.inner_text("#cold-start")
    finally:
        if not shot.exists():
            page.screenshot(path=tmp_path / "status-failure.png", full_page=True)
        page.close()

    assert shot.exists() and shot.stat().st_size > 10_000, shot
    assert all(r.startswith(url + "/") for r in requests), requests  # nothing from elsewhere
    assert not js_errors and not csp, (js_errors, csp)
