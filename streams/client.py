"""`interest-stream recommend | interests | similar`: the worker's HTTP API as tables."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_API = "http://127.0.0.1:6066"


class ApiUnavailable(RuntimeError):
    pass


def get(api: str, path: str, params: dict[str, Any] | None = None) -> tuple[int, Any]:
    query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
    url = api.rstrip("/") + path + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body)
        except ValueError:
            return err.code, {"error": body.decode(errors="replace")[:200]}
    except (urllib.error.URLError, OSError) as err:
        raise ApiUnavailable(
            f"no worker answers at {api} ({getattr(err, 'reason', err)}); "
            "start one with `interest-stream up` or pass --api"
        ) from None


def _call(args: argparse.Namespace, path: str, params: dict[str, Any] | None = None) -> Any:
    status, doc = get(args.api, path, params)
    if status != 200:
        print(f"error ({status}): {doc.get('error', doc)}", file=sys.stderr)
        return None
    if args.json:
        json.dump(doc, sys.stdout, ensure_ascii=False)
        print()
        return None
    return doc


def _quote(user: str) -> str:
    return urllib.parse.quote(user, safe="")


def cmd_recommend(args: argparse.Namespace) -> int:
    params = {"k": args.k, "granularity": args.granularity, "tags": args.tags}
    try:
        doc = _call(args, f"/recommendations/{_quote(args.user_id)}", params)
    except ApiUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if doc is None:
        return 0 if args.json else 1
    head = f"{doc['user_id']}: {len(doc['items'])} items"
    if doc["cold_start"]:
        head += f" (cold start: {doc['cold_start_reason']}; most popular recently)"
    else:
        head += f" ({doc['granularity']}" + (
            ", negatives applied)" if doc["negative_applied"] else ")"
        )
    print(head)
    print(f"{'#':>3}  {'score':>7}  {'p':>5}  {'why':<28}  title")
    for n, it in enumerate(doc["items"], 1):
        why = it["why"]
        reason = (why.get("popularity") and "popular") or why.get("granularity") or "-"
        if why.get("terms"):
            reason += ": " + ", ".join(why["terms"][:3])
        p = "-" if it["p"] is None else f"{it['p']:.2f}"
        print(f"{n:>3}  {it['score']:>7.3f}  {p:>5}  {reason[:28]:<28}  {it['title']}")
    return 0


def cmd_interests(args: argparse.Namespace) -> int:
    try:
        doc = _call(args, f"/users/{_quote(args.user_id)}/interests")
    except ApiUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if doc is None:
        return 0 if args.json else 1
    counts = ", ".join(f"{k} {v}" for k, v in doc["counts"].items())
    print(f"{doc['user_id']}: {counts}")
    fresh = ", ".join(f"{c} {'-' if s is None else _ago(s)}" for c, s in doc["freshness_s"].items())
    print(f"  last changed: {fresh}")
    print(f"{'term':<24} weight")
    for term, w in doc["top_terms"]:
        print(f"{term:<24} {w:.3f}")
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    try:
        doc = _call(args, f"/users/{_quote(args.user_id)}/similar", {"k": args.k})
    except ApiUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if doc is None:
        return 0 if args.json else 1
    print(f"users most like {doc['user_id']}:")
    for u in doc["users"]:
        print(f"  {u['similarity']:.3f}  {u['user_id']}")
    return 0


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} ago"
    return f"{seconds:.1f} s ago"


def add_read_commands(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("user_id")
        p.add_argument("--api", default=DEFAULT_API, help=f"worker URL (default {DEFAULT_API})")
        p.add_argument("--json", action="store_true", help="print the API's JSON")

    p = sub.add_parser("recommend", help="a user's recommendations, from a running worker")
    common(p)
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--granularity",
        choices=["fused", "word", "sentence", "document", "hybrid"],
        default=None,
        help="default fused",
    )
    p.add_argument("--tags", default=None, help="comma-separated: items with any of them")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("interests", help="a user's top terms, counts and freshness")
    common(p)
    p.set_defaults(func=cmd_interests)

    p = sub.add_parser("similar", help="users with the nearest fused vectors")
    common(p)
    p.add_argument("--k", type=int, default=10)
    p.set_defaults(func=cmd_similar)
