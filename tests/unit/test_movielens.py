"""MovieLens-100k from the recbole wheel as replay events, and the demo sample file.

These read the real atomic files. Without recbole they fail with the install hint
(`make venv` installs it); they are not skipped.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from streams.events import parse_event
from streams.movielens import (
    DEFAULT_SAMPLE_USERS,
    INSTALL_HINT,
    add_sample_arguments,
    handwritten_events,
    movielens_events,
    movielens_root,
    read_ratings,
    sample_events,
    select_users,
    write_sample,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def root() -> Path:
    return movielens_root()  # raises MovieLensMissing with the install hint


@pytest.fixture(scope="module")
def sample() -> list[dict]:
    return list(sample_events())


def test_the_atomic_files_have_the_columns_we_read(root: Path) -> None:
    assert (root / "ml-100k.inter").read_text().splitlines()[0].split("\t") == [
        "user_id:token",
        "item_id:token",
        "rating:float",
        "timestamp:float",
    ]
    item_header = (root / "ml-100k.item").read_text("utf-8").splitlines()[0]
    assert item_header.split("\t") == [
        "item_id:token",
        "movie_title:token_seq",
        "release_year:token",
        "class:token_seq",
    ]


def test_the_whole_data_set(root: Path) -> None:
    ratings = read_ratings(root)
    assert len(ratings) == 100_000 and len({r.user for r in ratings}) == 943
    counts = Counter(e["type"] for e in movielens_events(root))
    assert counts == {"item": 1682, "click": 100_000}
    # all_items adds the movies nobody in the slice rated
    counts = Counter(e["type"] for e in movielens_events(root, limit_users=1, all_items=True))
    assert counts == {"item": 1682, "click": 272}


def test_user_selection_rule(root: Path) -> None:
    ratings = read_ratings(root)
    assert select_users(ratings, limit_users=3) == ["1", "2", "3"]
    # users 1..5 have 272, 62, 54, 24 and 175 ratings
    assert select_users(ratings, limit_users=3, min_ratings=60) == ["1", "2", "5"]
    assert select_users(ratings, users=["u5", "2", 4, "u9999"]) == ["2", "4", "5"]
    events = list(movielens_events(root, users=["u4"]))
    assert {e["user_id"] for e in events if e["type"] == "click"} == {"u4"}
    assert Counter(e["type"] for e in events) == {"item": 24, "click": 24}


def test_events_validate_items_come_first_clicks_in_time_order(root: Path) -> None:
    events = list(movielens_events(root, limit_users=DEFAULT_SAMPLE_USERS))
    kinds = [e["type"] for e in events]
    n_items = kinds.count("item")
    assert kinds == ["item"] * n_items + ["click"] * (len(kinds) - n_items)
    items = {e["item_id"]: e for e in events[:n_items]}
    clicks = events[n_items:]
    assert {c["item_id"] for c in clicks} == set(items)  # exactly the referenced movies
    assert len({c["event_id"] for c in clicks}) == len(clicks)
    key = [(c["ts"], int(c["user_id"][1:]), int(c["item_id"])) for c in clicks]
    assert key == sorted(key)
    for e in events:
        parse_event(e)  # raises InvalidEvent on any bad line
    for c in clicks:
        assert c["event_id"] == f"ml-{c['user_id'][1:]}-{c['item_id']}"
        assert isinstance(c["ts"], float) and c["rating"] in {1, 2, 3, 4, 5}
        assert items[c["item_id"]]["ts"] <= c["ts"]  # an item's ts is its first rating
    star_wars = items["50"]
    assert star_wars["title"] == "Star Wars"
    assert star_wars["body"] == "Action, Adventure, Romance, Sci-Fi, War"
    assert star_wars["tags"] == ["action", "adventure", "romance", "sci-fi", "war"]
    assert items["12"]["title"] == "The Usual Suspects"
    assert items["267"]["title"] == "MovieLens movie 267" and "body" not in items["267"]


def test_deterministic(root: Path) -> None:
    assert list(movielens_events(root, limit_users=5)) == list(
        movielens_events(root, limit_users=5)
    )


def test_handwritten_lines_validate_and_fit_the_sample(root: Path) -> None:
    extra = handwritten_events()
    assert 25 <= len(extra) <= 40
    for e in extra:
        parse_event(e)
    kinds = Counter(e["type"] for e in extra)
    assert kinds["item"] >= 3 and kinds["search"] >= 4 and kinds["comment"] >= 4
    assert kinds["delete"] == 1
    assert len({e["event_id"] for e in extra if "event_id" in e}) == sum(
        "event_id" in e for e in extra
    )
    assert all("ts" in e for e in extra if e["type"] != "item")  # merged by ts
    # Chinese and English text, comments with and without ratings, one plain negative one
    texts = [t for e in extra if (t := e.get("text") or e.get("query") or e.get("body"))]
    assert any("\u4e00" <= ch <= "\u9fff" for t in texts for ch in t)
    assert any(t.isascii() for t in texts)
    comments = [e for e in extra if e["type"] == "comment"]
    assert any("rating" in c for c in comments)
    unrated = [c for c in comments if "rating" not in c and "sentiment" not in c]
    assert len(unrated) == 1 and "regret" in unrated[0]["text"]
    # events of MovieLens users fall inside that user's MovieLens time range
    spans: dict[str, list[float]] = {}
    for r in read_ratings(root):
        lo, hi = spans.setdefault(f"u{r.user}", [r.ts, r.ts])
        spans[f"u{r.user}"] = [min(lo, r.ts), max(hi, r.ts)]
    for e in extra:
        if e["type"] != "item" and e["user_id"] in spans and e["type"] != "delete":
            lo, hi = spans[e["user_id"]]
            assert lo <= e["ts"] <= hi, e
    # the deleted user is not a MovieLens user, had events before, and none after
    (deleted,) = [e for e in extra if e["type"] == "delete"]
    assert deleted["user_id"] not in spans
    before = [e for e in extra if e.get("user_id") == deleted["user_id"] and e is not deleted]
    assert len(before) >= 2 and all(e["ts"] < deleted["ts"] for e in before)


def test_sample_items_first_then_time_order_and_references_resolve(sample: list[dict]) -> None:
    kinds = Counter(e["type"] for e in sample)
    assert kinds == {"item": 943, "click": 2542, "search": 10, "comment": 9, "delete": 1}
    assert 2000 <= len(sample) <= 4000
    n_items = kinds["item"]
    assert all(e["type"] == "item" for e in sample[:n_items])
    rest = sample[n_items:]
    assert [e["ts"] for e in rest] == sorted(e["ts"] for e in rest)
    items = {e["item_id"] for e in sample[:n_items]}
    assert all(e["item_id"] in items for e in rest if e.get("item_id"))
    for e in sample:
        parse_event(e)


@pytest.mark.parametrize("name", ["demo.jsonl", "demo.jsonl.gz"])
def test_write_sample_is_deterministic(tmp_path: Path, name: str) -> None:
    a, b = tmp_path / "a" / name, tmp_path / "b" / name
    counts = write_sample(a, limit_users=3)
    assert write_sample(b, limit_users=3) == counts
    assert a.read_bytes() == b.read_bytes()
    data = gzip.decompress(a.read_bytes()) if name.endswith(".gz") else a.read_bytes()
    lines = [json.loads(x) for x in data.decode("utf-8").splitlines()]
    assert Counter(e["type"] for e in lines) == counts
    assert list(tmp_path.glob("**/.*.tmp")) == []


def test_sample_data_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_sample_arguments(parser)
    out = tmp_path / "s.jsonl"
    args = parser.parse_args(["--out", str(out), "--users", "2"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    n = len(out.read_text("utf-8").splitlines())
    assert f"wrote {n:,} events" in printed and "u1..u2" in printed


def test_without_recbole_the_error_says_how_to_install() -> None:
    # -S: no site-packages, so recbole cannot be found; streams.movielens needs nothing else
    code = "from streams.movielens import movielens_root; movielens_root()"
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "MovieLensMissing" in proc.stderr and INSTALL_HINT in proc.stderr
