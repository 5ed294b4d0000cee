"""Workers flush by time as well as by count; the monitor says when an evaluation ended."""

import io
import threading

import numpy as np
import pytest

from kpt.abtest._distributed import Reporter
from kpt.abtest._summary import Summary


class _Client:
    def __init__(self):
        self.casts = []

    def cast(self, type, header):
        self.casts.append(header)

    def call(self, type, header):
        return None


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_slow_stream_is_flushed_by_time_not_only_by_count():
    # 10 values a second against flush_every=1000: by count alone nothing would be sent for
    # 100 s, so `kpt-abtest monitor` showed nothing for a whole run.
    client, clock = _Client(), _Clock()
    reporter = Reporter(client, "w", flush_every=1000, flush_interval_s=2.0, clock=clock)
    for second in range(10):
        clock.now = float(second)
        reporter.observe("a", np.ones(5))
        reporter.observe("b", np.ones(5))
    sent = [(h["arm"], Summary.from_dict(h["summary"]).n) for h in client.casts]
    # flushes at t = 2, 4, 6, 8: every pending arm, covering the values since the last one
    assert [n for arm, n in sent if arm == "a"] == [15, 10, 10, 10]
    assert [n for arm, n in sent if arm == "b"] == [10, 10, 10, 10]
    assert [h["seq"] for h in client.casts] == list(range(1, 9))
    count_only = Reporter(_Client(), "w", flush_every=1000, flush_interval_s=None, clock=clock)
    clock.now = 1e6
    count_only.observe("a", np.ones(5))
    assert count_only.client.casts == []
    with pytest.raises(ValueError, match="flush_interval_s must be > 0"):
        Reporter(_Client(), "w", flush_interval_s=0)


def test_config_and_worker_command_carry_the_flush_interval():
    from kpt.abtest._cli import _DISTRIBUTED_KEYS, build_parser

    assert {"flush_every", "flush_interval_s"} <= _DISTRIBUTED_KEYS
    args = build_parser().parse_args(
        [
            "worker",
            "tcp://127.0.0.1:1",
            "--task",
            "m:f",
            "--shard",
            "0",
            "--shards",
            "1",
            "--flush-interval",
            "0.5",
        ]
    )
    assert args.flush_interval == 0.5


def test_monitor_says_the_evaluation_finished_when_the_aggregator_closes():
    pytest.importorskip("kpt.wire")
    from kpt.abtest import Aggregator
    from kpt.abtest._monitor import monitor
    from kpt.wire import Client

    aggregator = Aggregator().start()
    with Client(aggregator.endpoint, timeout=10) as worker:
        Reporter(worker, "w0", flush_every=10).observe("a", np.ones(10))
        worker.call("done", {"worker": "w0", "error": None, "sent": 1})
    first = threading.Event()

    class _Out(io.StringIO):
        def flush(self):
            first.set()

    out = _Out()
    closer = threading.Thread(target=lambda: (first.wait(30), aggregator.close()))
    closer.start()
    try:
        code = monitor(aggregator.endpoint, interval=0.2, out=out, max_updates=1000)
    finally:
        closer.join(30)
        aggregator.close()
    text = out.getvalue()
    assert code == 0 and "has finished: all 1 workers reported done" in text
    assert "alive but slow" not in text
