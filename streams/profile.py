"""One user's interest state computed offline from a replay file, with the worker's code.

Reads the file twice (items first, then the user's events), encodes the texts the user
touched in one batch per kind, and replays the events in time order through
`streams.state` exactly as the worker applies them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.events import ClickEvent, CommentEvent, DeleteEvent, ItemEvent, SearchEvent
from streams.replay import ReplayReport, read_events
from streams.sentiment import score as sentiment_score
from streams.state import EncodedEvent, InterestState, StateParams, TextVectors

UserEvent = ClickEvent | SearchEvent | CommentEvent


@dataclass
class Profile:
    user_id: str
    state: InterestState
    at: float | None
    applied: int
    duplicates: int
    items_missing: int
    reports: dict[str, ReplayReport] = field(default_factory=dict)


def _user_events(
    paths: Iterable[Path], user_id: str, at: float | None, reports: dict[str, ReplayReport]
) -> tuple[list[UserEvent], dict[str, ItemEvent], int]:
    items: dict[str, ItemEvent] = {}
    events: list[UserEvent] = []
    seen_ids: set[str] = set()
    duplicates = 0
    for path in paths:
        report = reports.setdefault(str(path), ReplayReport())
        for ev in read_events(path, report):
            if isinstance(ev, ItemEvent):
                items[ev.item_id] = ev
            elif ev.user_id != user_id:
                continue
            elif isinstance(ev, DeleteEvent):
                events.clear()  # erasure: nothing before it may count
                seen_ids.clear()
            elif at is None or ev.ts <= at:
                if ev.event_id in seen_ids:
                    duplicates += 1
                    continue
                seen_ids.add(ev.event_id)
                events.append(ev)
    return events, items, duplicates


def build_profile(
    events_path: str | Path,
    user_id: str,
    encoder: Any,
    items_path: str | Path | None = None,
    at: float | None = None,
    params: StateParams | None = None,
) -> Profile:
    """The user's state after every event up to `at` (default: all of them)."""
    paths = [Path(items_path)] if items_path else []
    paths.append(Path(events_path))
    reports: dict[str, ReplayReport] = {}
    events, items, duplicates = _user_events(paths, user_id, at, reports)
    events.sort(key=lambda e: e.ts)

    # each event's text, decided once: item texts as passages, what users write as queries
    texts = [text_of(ev, items) for ev in events]
    missing = sum(t is None for t in texts)
    vectors: dict[tuple[str, str], TextVectors] = {}
    for kind in ("passage", "query"):
        unique = list(dict.fromkeys(t for k, t in filter(None, texts) if k == kind))
        if unique:
            for text, enc in zip(unique, encoder.encode(unique, kind=kind), strict=True):
                vectors[(kind, text)] = TextVectors.of(enc)

    state = InterestState(encoder.dim, params or StateParams())
    applied = 0
    for ev, key in zip(events, texts, strict=True):
        applied += state.update(encoded_event(ev, vectors[key] if key else None))
    return Profile(user_id, state, at, applied, duplicates, missing, reports)


def text_of(ev: UserEvent, items: dict[str, ItemEvent]) -> tuple[str, str] | None:
    """(kind, text) the event contributes, or None for a click on an item with no text."""
    if isinstance(ev, SearchEvent):
        return ("query", ev.query)
    if isinstance(ev, CommentEvent):
        return ("query", ev.text)
    item = items.get(ev.item_id)
    text = item.text() if item is not None else ev.text
    return ("passage", text) if text and text.strip() else None


def encoded_event(ev: UserEvent, text: TextVectors | None) -> EncodedEvent:
    """What the state takes for a validated event; the streaming worker uses it too."""
    if isinstance(ev, ClickEvent):
        return EncodedEvent(
            "click",
            ev.ts,
            text=text,
            item_id=ev.item_id,
            dwell_s=ev.dwell_ms / 1000 if ev.dwell_ms is not None else None,
            rating=ev.rating,
        )
    if isinstance(ev, SearchEvent):
        return EncodedEvent("search", ev.ts, text=text)
    sentiment = ev.sentiment
    if sentiment is None and ev.rating is None:
        sentiment = sentiment_score(ev.text)
    return EncodedEvent(
        "comment", ev.ts, text=text, item_id=ev.item_id, rating=ev.rating, sentiment=sentiment
    )
