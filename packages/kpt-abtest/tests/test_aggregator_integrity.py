"""The aggregator trusts no message: replays, corrupt summaries, impostors and dead workers
(issue 10, defect 11). Each test failed on the aggregator that merged whatever arrived."""

import io
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("kpt.wire", reason="kpt-wire is the optional 'distributed' extra")

from kpt.abtest import Aggregator, Summary
from kpt.abtest._distributed import launch_workers
from kpt.abtest._ledger import Refused, SummaryLedger
from kpt.abtest._monitor import monitor, render_status
from kpt.wire import Client, RemoteError

HERE = Path(__file__).parent
WORKER_ENV = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}


def _summary_header(worker, seq, arm, values):
    return {"worker": worker, "seq": seq, "arm": arm, "summary": Summary().update(values).to_dict()}


def _near_significant_arms():
    """Two arms whose Welch p is near 0.05: a replay pushes it far below (the issue's case)."""
    rng = np.random.default_rng(7)
    a = [rng.normal(10.0, 1.0, 100) for _ in range(4)]
    b = [rng.normal(10.0, 1.0, 100) for _ in range(4)]
    b[0] = b[0] + 0.45  # one shard's values a little higher
    return a, b


def test_a_replayed_summary_is_ignored_and_counted_and_the_p_value_stays():
    a, b = _near_significant_arms()
    with Aggregator(baseline="a") as aggregator, Client(aggregator.endpoint) as client:
        headers = [_summary_header("w", i + 1, "a", v) for i, v in enumerate(a)]
        headers += [_summary_header("w", i + 5, "b", v) for i, v in enumerate(b)]
        for header in headers:
            assert client.call("summary", header).header == {"outcome": "merged"}
        before = aggregator.snapshot()
        for _ in range(10):  # the same message again, ten times, on the same connection
            assert client.call("summary", headers[4]).header == {"outcome": "replayed"}
        after = aggregator.snapshot()
    assert after["arms"] == before["arms"] and after["arms"]["b"]["n"] == 400
    assert after["comparisons"]["b"]["p_value"] == before["comparisons"]["b"]["p_value"]
    assert after["summaries_replayed"] == 10 and after["workers"]["w"]["replayed"] == 10
    # What counting the replays would have done (the defect): a p-value orders of magnitude off.
    replayed_b = Summary().merge_all([Summary().update(v) for v in b + [b[0]] * 10])
    merged_a = Summary().merge_all([Summary().update(v) for v in a])
    naive = Aggregator(baseline="a")._compare(merged_a, replayed_b)
    assert naive["p_value"] < before["comparisons"]["b"]["p_value"] / 1000


def _sketch_at_level(level: int, value: float) -> dict:
    return {"kind": "kll", "k": 200, "n": 1 << level,
            "levels": [b""] * level + [struct.pack("<d", value)]}  # fmt: skip


def _corrupt(**fields):
    payload = Summary().update(np.arange(10.0)).to_dict()
    payload.update(fields)
    return payload


CORRUPT = {
    "NaN mean": (_corrupt(mean=float("nan")), "mean is not finite"),
    "inf m2": (_corrupt(m2=float("inf")), "m2 is not finite"),
    "negative m2": (_corrupt(m2=-1.0), "m2 .* is negative"),
    "n = 2**62": (_corrupt(n=1 << 62, sketch=_sketch_at_level(62, 5.0)), r"n=4611686018427387904"),
    "m2 too big for the range": (_corrupt(m2=1e6), r"m2 exceeds n \* \(max - min\)"),
    "mean outside range": (_corrupt(mean=50.0), r"mean lies outside \[min, max\]"),
    "min above max": (_corrupt(min=9.0, max=0.0), "min is above max"),
    "n as float": (_corrupt(n=10.0), "must be an int"),
    "mean as str": (_corrupt(mean="nan"), "must be a number"),
    "sketch outside range": (
        _corrupt(sketch=Summary().update(np.arange(10.0) + 100).sketch.to_dict()),
        "outside the summary's",
    ),
    "sketch NaN": (
        _corrupt(sketch={"kind": "kll", "k": 200, "n": 10, "levels": [b"\xff" * 80]}),
        "NaN",
    ),
}


@pytest.mark.parametrize("name", sorted(CORRUPT))
def test_summary_from_dict_refuses_what_no_real_summary_holds(name):
    payload, match = CORRUPT[name]
    with pytest.raises(ValueError, match=match):
        Summary.from_dict(payload)
    with pytest.raises(ValueError, match=match):
        Summary.from_dicts([Summary().update([1.0, 2.0]).to_dict(), payload])


def test_corrupt_summaries_are_refused_and_the_aggregator_keeps_its_state():
    good = Summary().update(np.arange(10.0))
    with Aggregator(baseline="a") as aggregator, Client(aggregator.endpoint) as client:
        client.call("summary", {"worker": "w", "seq": 1, "arm": "a", "summary": good.to_dict()})
        client.call("summary", {"worker": "w", "seq": 2, "arm": "b", "summary": good.to_dict()})
        before = aggregator.snapshot()
        for seq, name in enumerate(sorted(CORRUPT), start=3):
            payload, match = CORRUPT[name]
            with pytest.raises(RemoteError, match=match) as info:
                client.call("summary", {"worker": "w", "seq": seq, "arm": "b", "summary": payload})
            assert info.value.code == "bad_summary"
        client.cast(
            "summary", {"worker": "w", "seq": 99, "arm": "b", "summary": CORRUPT["NaN mean"][0]}
        )
        client.call("sync", {})  # answered after the cast was handled (one connection, in order)
        after = aggregator.snapshot()  # answers: status and monitor still work
        assert after["arms"] == before["arms"] and after["comparisons"] == before["comparisons"]
        assert after["summaries_refused"] == len(CORRUPT) + 1
        assert after["workers"]["w"]["refused"] == len(CORRUPT) + 1
        assert "mean is not finite" in after["workers"]["w"]["last_refusal"]
        out = io.StringIO()
        assert monitor(aggregator.endpoint, once=True, out=out) == 0
        assert f"{len(CORRUPT) + 1} refused" in out.getvalue()
        # a good summary after all that still merges
        more = {"worker": "w", "seq": 100, "arm": "b", "summary": good.to_dict()}
        assert client.call("summary", more).header == {"outcome": "merged"}
        assert aggregator.snapshot()["arms"]["b"]["n"] == 20


def test_an_arm_cannot_grow_past_exact_float64_counts():
    ledger = SummaryLedger()
    big = {"version": 1, "n": 1 << 52, "mean": 5.0, "m2": 0.0, "min": 5.0, "max": 5.0,
           "sketch": _sketch_at_level(52, 5.0)}  # fmt: skip
    assert ledger.take_summary({"worker": "w", "seq": 1, "arm": "a", "summary": big}, b"c", 0) == (
        "merged"
    )
    ledger.take_summary({"worker": "w", "seq": 2, "arm": "a", "summary": big}, b"c", 0)
    with pytest.raises(Refused, match="over 2\\*\\*53"):
        ledger.take_summary({"worker": "w", "seq": 3, "arm": "a", "summary": big}, b"c", 0)
    assert ledger.arms()["a"].n == 1 << 53


def test_another_connection_cannot_speak_for_a_worker():
    with Aggregator() as aggregator:
        with Client(aggregator.endpoint) as worker, Client(aggregator.endpoint) as impostor:
            header = _summary_header("w0", 1, "a", [1.0, 2.0, 3.0])
            worker.call("summary", header)
            with pytest.raises(RemoteError, match="already streams from another connection"):
                impostor.call("summary", dict(header, seq=2))  # a replay with a new number
            with pytest.raises(RemoteError, match="another connection"):
                impostor.call("done", {"worker": "w0", "error": None, "sent": 1})
            assert worker.call("done", {"worker": "w0", "error": None, "sent": 1}).header == {
                "merged": 1,
                "missing": 0,
            }
        status = aggregator.snapshot()
    assert status["arms"]["a"]["n"] == 3 and status["summaries_refused"] == 2
    assert status["workers"]["w0"]["state"] == "done"


def test_lost_sequence_numbers_and_a_short_done_show_as_missing():
    with Aggregator() as aggregator, Client(aggregator.endpoint) as client:
        client.call("summary", _summary_header("w", 1, "a", [1.0, 2.0]))
        client.call("summary", _summary_header("w", 4, "a", [1.0, 2.0]))  # 2 and 3 never came
        assert aggregator.snapshot()["workers"]["w"]["missing"] == 2
        answer = client.call("done", {"worker": "w", "error": None, "sent": 5}).header
        assert answer == {"merged": 2, "missing": 3}
        status = aggregator.snapshot()
    assert "w: 3 summaries missing" in render_status(status)


def report_then_hang(shard, shards, reporter, **_):
    reporter.observe("a", [1.0, 2.0, 3.0])
    reporter.flush()
    time.sleep(60)  # killed by the test long before


@pytest.mark.timeout(300)
def test_a_killed_worker_shows_as_lost_in_status_and_monitor():
    with Aggregator(heartbeat_interval=0.2) as aggregator:
        with launch_workers(
            aggregator.endpoint, "test_aggregator_integrity:report_then_hang", 1, env=WORKER_ENV
        ) as pool:
            deadline = time.monotonic() + 180  # a cold worker start on a loaded CI host
            while aggregator.snapshot()["summaries_received"] < 1:
                assert time.monotonic() < deadline, "the worker never reported"
                time.sleep(0.05)
            assert aggregator.snapshot()["workers"]["w0"]["state"] == "streaming"
            pool.processes[0].kill()
            pool.processes[0].wait(10)
            # Its connection is forgotten after 3 heartbeat intervals of silence (3 x 1 s, the
            # worker's declared interval): bounded wait, far above that.
            while aggregator.snapshot()["workers"]["w0"]["state"] != "lost":
                assert time.monotonic() < deadline + 15, "the dead worker was never shown lost"
                time.sleep(0.1)
        status = aggregator.snapshot()
    assert status["workers"]["w0"]["silent_s"] >= 0.5
    text = render_status(status)
    assert "LOST (connection gone before done): w0 (silent" in text


def test_aa_simulation_replays_cannot_manufacture_significance():
    """A/A experiments, each with one summary replayed 10 times. Ignoring replays keeps the
    fixed-horizon false-positive rate at alpha; merging them (the defect) inflates it."""
    experiments, alpha = 400, 0.05
    compare = Aggregator(baseline="a")._compare  # the aggregator's own statistics, no wire
    rng = np.random.default_rng(2026)
    hits = {"ledger": 0, "naive": 0, "ledger_anytime": 0}
    for _ in range(experiments):
        ledger = SummaryLedger()
        payloads = {arm: [Summary().update(rng.normal(10, 1, 50)).to_dict() for _ in range(10)]
                    for arm in "ab"}  # fmt: skip
        seq = 0
        for arm in "ab":
            for payload in payloads[arm]:
                seq += 1
                header = {"worker": "w", "seq": seq, "arm": arm, "summary": payload}
                ledger.take_summary(header, b"c", 0.0)
                if arm == "b" and seq == 11:
                    for _ in range(10):
                        assert ledger.take_summary(header, b"c", 0.0) == "replayed"
        arms = ledger.arms()
        honest = compare(arms["a"], arms["b"])
        hits["ledger"] += honest["p_value"] < alpha
        hits["ledger_anytime"] += honest["decision"] != "continue"
        naive_b = Summary.from_dicts(payloads["b"] + [payloads["b"][0]] * 10)
        hits["naive"] += compare(arms["a"], naive_b)["p_value"] < alpha
    rates = {k: v / experiments for k, v in hits.items()}
    # Binomial(400, 0.05): sd 1.1 points; 9% is 3.7 sd above alpha.
    assert rates["ledger"] <= 0.09, rates
    assert rates["ledger_anytime"] <= alpha, rates
    assert rates["naive"] >= 3 * alpha, rates  # what the defect did (23.5% with this seed)
