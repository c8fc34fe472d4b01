"""The offline evaluation's data: a replay file as columns, its texts encoded once, and the
train/test splits of docs/evaluation.md.

`load_log` reads item and user events (deduplicated by event id, a user's events before
their deletion dropped) into flat numpy columns; `encode_texts` encodes every distinct text
once, through an on-disk cache keyed by model, kind and text; `per_user_split` and
`global_split` cut the log into `Problem`s: whose state is built from which events, when it
is read, which items are their positives and which they have already seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from streams.events import ClickEvent, CommentEvent, DeleteEvent, ItemEvent, SearchEvent
from streams.profile import encoded_event, text_of
from streams.replay import ReplayReport, read_events
from streams.state import KINDS, EventBatch, TextVectors

log = logging.getLogger(__name__)

UserEvent = ClickEvent | SearchEvent | CommentEvent
POSITIVE_RATING = 4.0  # test clicks rated at least this (or unrated) are positives
TEST_FRACTION = 0.2
MIN_TRAIN_EVENTS = 5


@dataclass
class Log:
    """A replay file as columns. Events are sorted by (user, ts, file order)."""

    item_ids: list[str]
    item_texts: list[str]
    users: list[str]
    user: np.ndarray  # [n] index into users
    ts: np.ndarray  # [n] seconds
    kind: np.ndarray  # [n] index into KINDS
    item: np.ndarray  # [n] index into item_ids, -1: none or unknown
    rating: np.ndarray  # [n] NaN when unrated
    # what the state needs per event, with the text as a key into `texts` (-1: no text)
    encoded: list[Any]  # EncodedEvent without text vectors
    text_key: np.ndarray  # [n]
    texts: list[tuple[str, str]]  # (kind "passage"/"query", text), distinct
    reports: dict[str, ReplayReport] = field(default_factory=dict)
    duplicates: int = 0
    unknown_items: int = 0

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def item_text_key(self) -> np.ndarray:
        """[items] key into `texts` of each item's text."""
        index = {t: i for i, t in enumerate(self.texts)}
        return np.array([index[("passage", t)] for t in self.item_texts], dtype=np.int64)

    @property
    def positive(self) -> np.ndarray:
        """[n] clicks on a known item rated >= 4 or unrated: what a test period counts."""
        ok = (self.kind == KINDS.index("click")) & (self.item >= 0)
        return ok & ~(self.rating < POSITIVE_RATING)  # NaN (unrated) compares False


def _natural(s: str) -> tuple[int, str]:
    digits = "".join(c for c in s if c.isdigit())
    return (int(digits) if digits else -1, s)


def load_log(paths: Sequence[str | Path], limit_users: int | None = None) -> Log:
    """Items (latest line per item id wins) and user events of all `paths`, in that order;
    `limit_users` keeps the first N user ids in natural order ("u2" before "u10")."""
    items: dict[str, ItemEvent] = {}
    per_user: dict[str, list[UserEvent]] = {}
    seen_ids: dict[str, set[str]] = {}
    reports: dict[str, ReplayReport] = {}
    duplicates = 0
    for path in paths:
        report = reports.setdefault(str(path), ReplayReport())
        for ev in tqdm(read_events(path, report), desc=f"read {Path(path).name}", unit=" lines"):
            if isinstance(ev, ItemEvent):
                if ev.text().strip():
                    items[ev.item_id] = ev
                continue
            ids = seen_ids.setdefault(ev.user_id, set())
            if isinstance(ev, DeleteEvent):  # erasure: nothing before it may count
                per_user.pop(ev.user_id, None)
                ids.clear()
                continue
            if ev.event_id in ids:
                duplicates += 1
                continue
            ids.add(ev.event_id)
            per_user.setdefault(ev.user_id, []).append(ev)

    users = sorted(per_user, key=_natural)[:limit_users]
    item_ids = sorted(items, key=_natural)
    item_index = {i: n for n, i in enumerate(item_ids)}
    item_texts = [items[i].text() for i in item_ids]
    texts: dict[tuple[str, str], int] = {("passage", t): -1 for t in item_texts}
    cols: dict[str, list[Any]] = {k: [] for k in ("user", "ts", "kind", "item", "rating", "key")}
    encoded: list[Any] = []
    unknown = 0
    for u, user_id in enumerate(users):
        for ev in sorted(per_user[user_id], key=lambda e: e.ts):  # stable: file order on ties
            item = item_index.get(getattr(ev, "item_id", None) or "", -1)
            if isinstance(ev, ClickEvent) and item < 0:
                unknown += 1
            text = text_of(ev, items)
            if text is not None:
                texts.setdefault(text, -1)
            cols["user"].append(u)
            cols["ts"].append(ev.ts)
            cols["kind"].append(KINDS.index(ev.type))
            cols["item"].append(item)
            rating = getattr(ev, "rating", None)
            cols["rating"].append(np.nan if rating is None else rating)
            cols["key"].append(text)
            encoded.append(encoded_event(ev, None))
    text_list = list(texts)
    key_of = {t: i for i, t in enumerate(text_list)}
    return Log(
        item_ids=item_ids,
        item_texts=item_texts,
        users=users,
        user=np.array(cols["user"], dtype=np.int64),
        ts=np.array(cols["ts"], dtype=np.float64),
        kind=np.array(cols["kind"], dtype=np.int64),
        item=np.array(cols["item"], dtype=np.int64),
        rating=np.array(cols["rating"], dtype=np.float64),
        encoded=encoded,
        text_key=np.array([-1 if t is None else key_of[t] for t in cols["key"]], dtype=np.int64),
        texts=text_list,
        reports=reports,
        duplicates=duplicates,
        unknown_items=unknown,
    )


# ---------------------------------------------------------------------------------------
# Encoding, once per distinct text


class EncodeCache:
    """TextVectors on disk, one .npz per (model, precision); keys are text hashes."""

    def __init__(self, directory: Path | None, model: str) -> None:
        self.path = None if directory is None else Path(directory) / f"{model}.npz"
        self.entries: dict[str, TextVectors] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.entries = _load_cache(self.path)
            except (OSError, ValueError, KeyError) as err:
                log.warning("ignoring unreadable encode cache %s: %s", self.path, err)

    @staticmethod
    def key(kind: str, text: str) -> str:
        return hashlib.sha256(f"{kind}\0{text}".encode()).hexdigest()[:32]

    def save(self) -> None:
        if self.path is None or not self.entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = list(self.entries)
        tv = [self.entries[k] for k in keys]
        tmp = self.path.with_name(f".{self.path.name}.tmp.npz")
        np.savez(
            tmp,
            keys=np.array(keys),
            word_sum=np.stack([t.word_sum for t in tv]),
            sentence_sum=np.stack([t.sentence_sum for t in tv]),
            document=np.stack([t.document for t in tv]),
            counts=np.array([[t.n_words, t.n_sentences] for t in tv], dtype=np.int64),
            terms=np.array([json.dumps(t.terms, ensure_ascii=False) for t in tv]),
        )
        tmp.replace(self.path)


def _load_cache(path: Path) -> dict[str, TextVectors]:
    with np.load(path) as z:
        return {
            str(k): TextVectors(
                word_sum=z["word_sum"][i],
                n_words=int(z["counts"][i, 0]),
                sentence_sum=z["sentence_sum"][i],
                n_sentences=int(z["counts"][i, 1]),
                document=z["document"][i],
                terms=tuple((w, int(c)) for w, c in json.loads(str(z["terms"][i]))),
            )
            for i, k in enumerate(z["keys"])
        }


def encode_texts(
    texts: Sequence[tuple[str, str]],
    encode: Callable[[list[str], str], list[Any]],
    cache: EncodeCache,
    chunk: int = 128,
) -> list[TextVectors]:
    """TextVectors per (kind, text), encoding only what the cache lacks, in chunks with a
    progress bar. `encode(texts, kind)` is the encoder's batch call."""
    keys = [EncodeCache.key(k, t) for k, t in texts]
    todo = [i for i, k in enumerate(keys) if k not in cache.entries]
    if todo:
        with tqdm(total=len(todo), desc="encode", unit=" texts") as bar:
            for kind in ("passage", "query"):
                mine = [i for i in todo if texts[i][0] == kind]
                for start in range(0, len(mine), chunk):
                    part = mine[start : start + chunk]
                    out = encode([texts[i][1] for i in part], kind)
                    for i, enc in zip(part, out, strict=True):
                        cache.entries[keys[i]] = TextVectors.of(enc)
                    bar.update(len(part))
        cache.save()
    return [cache.entries[k] for k in keys]


def text_table(vectors: Sequence[TextVectors], dim: int) -> np.ndarray:
    """[texts + 1, 3, d+1] packed as `EventBatch.vectors` wants; the last row is "no text"."""
    if not vectors:
        return np.zeros((1, 3, dim + 1), dtype=np.float32)
    packed = EventBatch.pack_vectors(
        np.stack([v.word_sum for v in vectors]),
        np.array([v.n_words for v in vectors]),
        np.stack([v.sentence_sum for v in vectors]),
        np.array([v.n_sentences for v in vectors]),
        np.stack([v.document for v in vectors]),
    )
    return np.concatenate([packed, np.zeros((1, 3, dim + 1), dtype=packed.dtype)])


# ---------------------------------------------------------------------------------------
# Splits


@dataclass
class Problem:
    """Users to recommend for: state from `train` events, read at `at`, judged on
    `positives`, never recommending what they `seen` in training."""

    users: np.ndarray  # [U] index into Log.users
    train: np.ndarray  # event indices into the Log, grouped by user
    train_row: np.ndarray  # [len(train)] row of `users` each train event belongs to
    at: np.ndarray  # [U] the time the state is read (the user's split time)
    positives: np.ndarray  # [U, items] bool
    seen: np.ndarray  # [U, items] bool

    def __len__(self) -> int:
        return len(self.users)


def _boundaries(user: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) of each run of equal values in a grouped array."""
    if user.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cut = np.flatnonzero(np.diff(user)) + 1
    return np.r_[0, cut], np.r_[cut, user.size]


def _problem(
    log: Log,
    users: list[int],
    train: list[np.ndarray],
    test: list[np.ndarray],
    at: list[float],
) -> Problem:
    n_items = len(log.item_ids)
    positives = np.zeros((len(users), n_items), dtype=bool)
    seen = np.zeros((len(users), n_items), dtype=bool)
    positive = log.positive
    for row, (tr, te) in enumerate(zip(train, test, strict=True)):
        items = log.item[tr]
        seen[row, items[items >= 0]] = True
        positives[row, log.item[te[positive[te]]]] = True
    positives &= ~seen  # candidates exclude the train history
    keep = positives.any(axis=1)
    rows = np.flatnonzero(keep)
    train_kept = [train[r] for r in rows]
    return Problem(
        users=np.array(users, dtype=np.int64)[rows],
        train=np.concatenate(train_kept) if train_kept else np.zeros(0, dtype=np.int64),
        train_row=np.repeat(np.arange(rows.size), [t.size for t in train_kept]).astype(np.int64),
        at=np.array(at, dtype=np.float64)[rows],
        positives=positives[rows],
        seen=seen[rows],
    )


def per_user_split(
    log: Log, events: np.ndarray | None = None, fraction: float = TEST_FRACTION
) -> Problem:
    """Each user's events (of `events`, default all) in time order: the last `fraction`
    (at least one) are their test part, the rest train; kept when >= 5 train events and
    >= 1 test positive outside their train history. State read at the first test event."""
    idx = np.arange(len(log)) if events is None else np.asarray(events, dtype=np.int64)
    starts, stops = _boundaries(log.user[idx])
    users, train, test, at = [], [], [], []
    for a, b in zip(starts, stops, strict=True):
        n = int(b - a)
        n_test = max(1, round(n * fraction))
        n_train = n - n_test
        if n_train < MIN_TRAIN_EVENTS:
            continue
        users.append(int(log.user[idx[a]]))
        train.append(idx[a : a + n_train])
        test.append(idx[a + n_train : b])
        at.append(float(log.ts[idx[a + n_train]]))
    return _problem(log, users, train, test, at)


def global_split(log: Log, t_split: float) -> Problem:
    """Train on everything before `t_split`, test on everything after; state read at it."""
    starts, stops = _boundaries(log.user)
    users, train, test, at = [], [], [], []
    for a, b in zip(starts, stops, strict=True):
        cut = a + int(np.searchsorted(log.ts[a:b], t_split, side="left"))
        if cut - a < MIN_TRAIN_EVENTS or cut == b:
            continue
        users.append(int(log.user[a]))
        train.append(np.arange(a, cut))
        test.append(np.arange(cut, b))
        at.append(t_split)
    return _problem(log, users, train, test, at)


def before(log: Log, t: float) -> np.ndarray:
    """Indices of the events strictly before `t` (still grouped by user)."""
    return np.flatnonzero(log.ts < t)
