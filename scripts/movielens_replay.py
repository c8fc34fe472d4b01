"""Convert MovieLens-100k (inside the recbole wheel) to a replay file for `interest-stream eval`.

    python scripts/movielens_replay.py --out data/ml-100k.jsonl.gz

One `item` line per movie (title; body = genres and release year; tags = genres), then one
`click` per rating in time order with its rating: `eval` counts ratings >= 4 as positives
and the state takes ratings <= 2 as negative feedback. Generated, never committed.
"""

from __future__ import annotations

import argparse
import sys

from streams.movielens import MovieLensMissing, movielens_events, write_events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, metavar="FILE", help="JSON Lines (.gz ok)")
    parser.add_argument(
        "--limit-users",
        type=int,
        default=None,
        metavar="N",
        help="only the first N user ids (default: all 943)",
    )
    args = parser.parse_args(argv)
    try:
        counts = write_events(
            args.out,
            movielens_events(limit_users=args.limit_users, all_items=True, with_year=True),
        )
    except MovieLensMissing as err:
        print(err, file=sys.stderr)
        return 1
    detail = ", ".join(f"{t} {n:,}" for t, n in counts.items())
    print(f"wrote {sum(counts.values()):,} lines ({detail}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
