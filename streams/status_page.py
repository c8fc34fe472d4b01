"""The status page at `/`: one self-contained HTML file (streams/static/status.html).

The page polls `/healthz` every 2 s (totals, events/s from successive polls, Qdrant
pending, parked users, freshness p50/p99, uptime) and, for the user searched, the JSON
endpoints `/users/{id}/interests` and `/recommendations/{id}` every 3 s. It has no build
step and loads nothing from elsewhere: styles and script are inline, and the
Content-Security-Policy below forbids any other origin. API values are written with
`textContent` only.

Registered with `app.page` while the app is created, so it takes `/` before Faust's own
index blueprint (`{"status": "OK"}`), which is applied when the web server starts.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import faust

HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def page_html() -> str:
    return files("streams").joinpath("static/status.html").read_text(encoding="utf-8")


def register_status_page(app: faust.App) -> None:
    """Serve the status page at `/` (call inside `create_app`, before the worker starts)."""
    html = page_html()  # read once: a missing file fails at start-up, not on a request

    async def status_page(web: Any, request: Any) -> Any:
        return web.html(html, headers=dict(HEADERS))

    app.page("/", name="status_page")(status_page)
