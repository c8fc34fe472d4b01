"""The read side over HTTP on a real worker (Tansu + `interest-stream up` + Qdrant local)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from live_stack import Stack

from streams.embedded import EmbeddedBroker, ensure_topics
from streams.supervisor import WorkerProcess

pytestmark = pytest.mark.integration

ITEMS = {
    "sf1": ("Interstellar", "Astronauts travel through a wormhole near a black hole in space."),
    "sf2": ("The Martian", "An astronaut stranded on Mars grows potatoes to survive."),
    "sf3": ("流浪地球", "太阳即将毁灭，人类推着地球飞向新的星系。"),
    "sf4": ("Alien invasion", "Spaceships from another galaxy attack the planet."),
    "ck1": ("Sourdough bread", "Bake a crusty sourdough loaf with a simple starter."),
    "ck2": ("红烧肉", "家常红烧肉的做法，五花肉慢炖入味。"),
    "ck3": ("Pasta carbonara", "Cook spaghetti with eggs, cheese and pancetta."),
    "ck4": ("Chocolate cake", "A rich chocolate cake recipe with butter and cocoa."),
    "fi1": ("Stock market today", "Shares fell as investors worried about interest rates."),
    "fi2": ("Bond yields", "Government bond yields rose after the inflation report."),
    "fi3": ("股市周报", "本周股市下跌，投资者担心通胀和利率。"),
}
TOPIC = {i: i[:2] for i in ITEMS}
TOKEN = "test-token-1234"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, e5_exported):
    tmp = tmp_path_factory.mktemp("api")
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, 2)
        worker = WorkerProcess(
            broker.bootstrap,
            tmp / "data",
            # the popularity prior would let the few items clicked here outrank the topic
            # these tests follow; tests/integration/test_read_side_prior.py covers it
            env={"INTEREST_API_TOKEN": TOKEN, "INTEREST_POPULARITY_PRIOR_WEIGHT": "0"},
        ).start()
        s = Stack(broker, worker)
        s.send(
            [
                ("items", i, {"item_id": i, "title": t, "body": b, "tags": [TOPIC[i]]})
                for i, (t, b) in ITEMS.items()
            ]
        )
        try:
            yield s
        finally:
            worker.stop()


def topics(doc: dict) -> list[str]:
    return [TOPIC[it["item_id"]] for it in doc["items"]]


def test_recommendations_follow_a_click_on_a_different_topic_within_one_batch(stack):
    stack.clicks("alice", ["sf1", "sf2", "sf3"])
    before = stack.recs("alice", k=3)
    assert not before["cold_start"] and topics(before)[0] == "sf", before
    assert {it["item_id"] for it in before["items"]}.isdisjoint({"sf1", "sf2", "sf3"})
    stack.clicks("alice", ["ck1", "ck2", "ck3"] * 2)  # one micro-batch of cooking clicks
    after = stack.recs("alice", k=3)
    assert "ck" in topics(after), after
    # seen items never come back, whatever the granularity
    seen = {"sf1", "sf2", "sf3", "ck1", "ck2", "ck3"}
    for g in ("fused", "word", "sentence", "document", "hybrid"):
        doc = stack.recs("alice", k=20, granularity=g)
        assert seen.isdisjoint(it["item_id"] for it in doc["items"]), g
        assert len(doc["items"]) == len(ITEMS) - len(seen)


def test_items_explain_themselves_and_carry_a_probability(stack):
    stack.clicks("bob", ["sf1", "sf4", "sf2"])
    doc = stack.recs("bob", k=5)
    top = doc["items"][0]
    assert top["item_id"] == "sf3" or TOPIC[top["item_id"]] == "sf"
    assert top["why"]["granularity"] in ("word", "sentence", "document")
    assert set(top["why"]["similarity"]) == {"word", "sentence", "document"}
    ps = [it["p"] for it in doc["items"]]
    assert all(0 < p < 1 for p in ps) and ps[0] >= ps[-1]


def test_negative_feedback_pushes_similar_items_away(stack):
    stack.clicks("carol", ["sf1", "sf2", "sf4"])
    stack.clicks("dave", ["sf1", "sf2", "sf4"])
    stack.clicks("dave", ["fi1"], rating=1)  # dave dislikes finance news
    carol_doc = stack.recs("carol", k=20)
    assert not carol_doc["cold_start"] and not carol_doc["negative_applied"]
    carol = {it["item_id"]: it["score"] for it in carol_doc["items"]}
    dave_doc = stack.recs("dave", k=20)
    assert dave_doc["negative_applied"]
    dave = {it["item_id"]: it["score"] for it in dave_doc["items"]}
    rank_d = list(dave)
    rank_c = [i for i in carol if i in dave]  # the same candidates (fi1 is dave's, seen)
    assert "fi2" in rank_c and "fi2" in rank_d, (carol, dave_doc)
    for item in ("fi2", "fi3"):  # the finance items dave has not seen
        assert rank_d.index(item) >= rank_c.index(item), (rank_c, rank_d)
    assert dave["fi2"] < carol["fi2"]


def test_cold_start_users_get_popular_items_and_say_so(stack):
    doc = stack.recs("nobody-yet", k=3)
    assert doc["cold_start"] and doc["cold_start_reason"] == "unknown user"
    assert len(doc["items"]) == 3 and all(it["why"]["popularity"] for it in doc["items"])
    stack.clicks("newbie", ["ck4"])
    doc = stack.recs("newbie", k=3)
    assert doc["cold_start"] and "fewer than 3" in doc["cold_start_reason"]
    assert "ck4" not in [it["item_id"] for it in doc["items"]]
    tagged = stack.recs("nobody-yet", k=10, tags="fi")
    assert tagged["items"] and all(TOPIC[it["item_id"]] == "fi" for it in tagged["items"])


def test_interests_and_similar_users(stack):
    stack.clicks("erin", ["ck1", "ck2", "ck4"])
    stack.clicks("frank", ["ck1", "ck3", "ck4"])
    stack.clicks("gina", ["fi1", "fi2", "fi3"])
    status, doc = stack.worker.get("/users/erin/interests")
    assert status == 200, doc
    assert doc["counts"]["click"] == 3 and doc["top_terms"]
    assert all(doc["freshness_s"][c] is not None for c in ("word", "sentence", "document"))
    assert doc["freshness_s"]["negative"] is None
    status, doc = stack.worker.get("/users/erin/similar?k=20")
    assert status == 200, doc
    users = [u["user_id"] for u in doc["users"]]
    assert "erin" not in users and users.index("frank") < users.index("gina")


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/recommendations/bad%20id", 400, "user_id"),
        ("/recommendations/alice?k=0", 400, "k must be in 1..100"),
        ("/recommendations/alice?k=ten", 400, "k must be an integer"),
        ("/recommendations/alice?granularity=topic", 400, "granularity must be one of"),
        ("/recommendations/alice?tags=" + ",".join("t" * 65 for _ in range(2)), 400, "tags"),
        ("/users/nobody/interests", 404, "unknown user"),
        ("/users/nobody/similar", 404, "unknown user"),
        ("/users/alice/similar?k=1000", 400, "k must be in 1..100"),
        ("/users/nobody/vectors", 404, "unknown user"),
    ],
)
def test_bad_requests_get_a_clear_json_error(stack, path, status, words):
    got, doc = stack.worker.get(path)
    assert got == status and words in doc["error"], (got, doc)


def delete(url: str, token: str | None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method="DELETE")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_deleting_needs_the_token_and_then_erases_the_user(stack):
    stack.clicks("hank", ["fi1", "fi2", "fi3"])
    url = f"{stack.worker.url}/users/hank"
    assert delete(url, None)[0] == 401
    assert delete(url, "wrong-token")[0] == 401
    assert delete(f"{stack.worker.url}/users/bad%20id", TOKEN)[0] == 400
    assert stack.worker.get("/users/hank/interests")[0] == 200
    status, doc = delete(url, TOKEN)
    assert status == 202 and doc["status"] == "deletion queued"
    stack.sent += 1  # the worker published the deletion itself
    stack.worker.wait_idle(consumed=stack.sent)
    assert stack.worker.get("/users/hank/interests")[0] == 404


def test_the_cli_prints_tables_from_the_running_worker(stack):
    stack.clicks("ivan", ["sf1", "sf3", "sf4"])
    exe = shutil.which("interest-stream") or str(Path(sys.executable).parent / "interest-stream")

    def run(*args: str) -> str:
        out = subprocess.run(
            [exe, *args, "--api", stack.worker.url], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    text = run("recommend", "ivan", "--k", "3")
    assert text.startswith("ivan: 3 items (fused)")
    assert len([ln for ln in text.splitlines() if re.match(r"^\s+\d+\s+\d\.\d{3}", ln)]) == 3
    doc = json.loads(run("recommend", "ivan", "--json", "--granularity", "hybrid"))
    assert doc["granularity"] == "hybrid" and doc["items"]
    assert "click 3" in run("interests", "ivan")
    assert "users most like ivan" in run("similar", "ivan", "--k", "2")
    bad = subprocess.run(
        [exe, "interests", "nobody", "--api", stack.worker.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "unknown user" in bad.stderr


def test_metrics_follow_prometheus_conventions_and_agree_with_healthz(stack):
    from prometheus_client.parser import text_string_to_metric_families

    stack.clicks("judy", ["sf1", "ck1", "fi1"])
    with urllib.request.urlopen(f"{stack.worker.url}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    health = stack.worker.health()

    def total(name: str) -> float:
        return sum(s.value for s in families[name].samples if s.name.endswith("_total"))

    assert total("interest_events_consumed") == health["totals"]["consumed"]
    assert total("interest_events_applied") == health["totals"]["applied"]
    topics = {s.labels["topic"] for s in families["interest_events_consumed"].samples}
    assert {"items", "events.click"} <= topics
    fresh = families["interest_freshness_seconds"]
    assert next(s.value for s in fresh.samples if s.name.endswith("_count")) > 0
    lag = {
        (s.labels["topic"], s.labels["partition"]): s.value
        for s in families["interest_consumer_lag_messages"].samples
    }
    assert ("events.click", "0") in lag or ("events.click", "1") in lag
    assert all(v == 0 for v in lag.values()), lag  # caught up
    texts = {
        s.labels["source"]: s.value
        for s in families["interest_user_texts"].samples
        if s.name.endswith("_total")
    }
    assert texts == {k: health["texts"].get(k, 0) for k in ("encoded", "cached")}
    for f in families.values():  # bounded labels only: never a user or item id
        for s in f.samples:
            assert set(s.labels) <= {"topic", "partition", "error", "reason", "source", "le"}, s
