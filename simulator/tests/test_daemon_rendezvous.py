"""Collectives whose ranks are separate clients: each posts its part, the daemon runs one."""

from __future__ import annotations

import time

import numpy as np
import pytest

from kpt.sim import DeviceHangError, InvalidRequestError, SimClient, TensorRef
from kpt.sim._daemon_thread import serve_in_thread

RANKS = 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# The daemon runs in this process's thread, and its work on a 16 MiB collective can hold a
# client's reply past three short heartbeats on a loaded machine ("no traffic for 0.6s"); no
# test here relies on a silence being noticed (a disconnect is an explicit close).
HEARTBEAT_S = 1.0


@pytest.fixture
def served():
    with serve_in_thread("test-asic", RANKS, heartbeat_interval=HEARTBEAT_S) as (endpoint, daemon):
        clock = FakeClock()
        daemon.rendezvous.clock = clock
        clients = [SimClient(endpoint, heartbeat_interval=HEARTBEAT_S) for _ in range(RANKS)]
        yield clients, clock
        for c in clients:
            c.close()


def upload(c, device, array):
    buffer = c.alloc(device, max(array.nbytes, 1))
    c.write(buffer, 0, array)
    return TensorRef.contiguous(buffer, str(array.dtype), array.shape)


def empty(c, device, shape, dtype="float32"):
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return TensorRef.contiguous(c.alloc(device, nbytes), dtype, shape)


def values(c, ref):
    nbytes = int(np.prod(ref.shape)) * np.dtype(ref.dtype).itemsize
    return c.read(ref.buffer, 0, nbytes).view(ref.dtype).reshape(ref.shape)


def data(rank, size=6):
    return np.arange(size, dtype=np.float32) * (rank + 1) - rank


def post_all(clients, seq, kind, inputs, outputs, first_rank=0, **terms):
    """Every rank posts in order; only the last post completes the collective."""
    done = []
    for rank, c in enumerate(clients, first_rank):
        done.append(c.collective_post("g", seq, rank, RANKS, kind, inputs[rank],
                                      outputs[rank] if outputs else None, **terms))  # fmt: skip
    return [d is not None for d in done]


def test_all_reduce_runs_when_the_last_rank_posts_and_every_rank_sees_the_sum(served):
    clients, _ = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    assert post_all(clients, 0, "all_reduce", refs, None) == [False, False, True]
    assert clients[0].collective_poll("g", 0) and clients[1].collective_poll("g", 0)
    for r, c in enumerate(clients):
        np.testing.assert_array_equal(values(c, refs[r]), sum(data(k) for k in range(RANKS)))


@pytest.mark.parametrize("op", ["avg", "max", "min", "prod"])
def test_all_reduce_ops_into_outputs(served, op):
    clients, _ = served
    ins = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    outs = [empty(c, r, (6,)) for r, c in enumerate(clients)]
    post_all(clients, 0, "all_reduce", ins, outs, op=op)
    stacked = np.stack([data(r) for r in range(RANKS)])
    expected = {"avg": stacked.mean(0), "max": stacked.max(0), "min": stacked.min(0),
                "prod": stacked.prod(0)}[op]  # fmt: skip
    for r, c in enumerate(clients):
        np.testing.assert_allclose(values(c, outs[r]), expected, rtol=1e-6)
        np.testing.assert_array_equal(values(c, ins[r]), data(r))


def test_premul_sum_scales_each_ranks_input_by_its_own_factor(served):
    """NCCL's PreMulSum: sum over ranks of factor[r] * input[r], the scaling inside the
    collective (a batch-weighted gradient sync without a multiply kernel of its own)."""
    clients, _ = served
    factors = [0.5, 0.25, 2.0]
    ins = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    for r, c in enumerate(clients):
        c.collective_post("g", 0, r, RANKS, "all_reduce", ins[r], op="premul_sum",
                          factor=factors[r])  # fmt: skip
    expected = sum(f * data(r) for r, f in enumerate(factors))
    for r, c in enumerate(clients):
        np.testing.assert_allclose(values(c, ins[r]), expected, rtol=1e-6)
    ins = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    scattered = [empty(c, r, (2,)) for r, c in enumerate(clients)]
    for r, c in enumerate(clients):
        c.collective_post("g", 1, r, RANKS, "reduce_scatter", ins[r], scattered[r],
                          op="premul_sum", factor=factors[r])  # fmt: skip
    for r, c in enumerate(clients):
        np.testing.assert_allclose(values(c, scattered[r]), expected[2 * r : 2 * r + 2], rtol=1e-6)


def polled(client, group, seq, limit_s=30.0):
    """The outcome of a collective posted by casts, which other clients' casts may still be
    on their way to (the daemon serves clients in the order their messages arrive)."""
    deadline = time.monotonic() + limit_s
    while (outcome := client.collective_poll(group, seq)) is None:
        assert time.monotonic() < deadline, f"collective #{seq} of {group!r} never ran"
        time.sleep(0.005)
    return outcome


def test_a_cast_post_needs_no_answer_and_its_outcome_or_refusal_comes_from_the_poll(served):
    clients, _ = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    for r, c in enumerate(clients):
        assert c.collective_cast("g", 0, r, RANKS, "all_reduce", refs[r]) is None
        c.flush()  # a cast goes with the client's next batch (or its first poll)
    for r, c in enumerate(clients):
        assert polled(c, "g", 0)["done"]
        np.testing.assert_array_equal(values(c, refs[r]), sum(data(k) for k in range(RANKS)))
    # a refused part (rank 1 calls another op): the poll raises for it and for rank 0 before it
    for r, c in enumerate(clients[:2]):
        c.collective_cast("g", 1, r, RANKS, "all_reduce", refs[r], op="max" if r else "sum")
        c.flush()
    for c in clients[:2]:
        with pytest.raises(InvalidRequestError, match="same collectives in the same order"):
            polled(c, "g", 1)
    # a post whose number cannot be read is refused at the client's next call
    clients[2].collective_cast("g", -1, 2, RANKS, "all_reduce", refs[2])
    with pytest.raises(InvalidRequestError, match="seq"):
        clients[2].synchronize()


def test_a_cast_waits_with_the_launches_and_the_posting_clients_poll_sends_it(served):
    """A cast is queued like a launch (NCCL's enqueue): no message of its own. Peers wait
    for it until its client sends: at a call, a flush, or its first poll of any collective."""
    clients, _ = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    for r, c in enumerate(clients[1:], start=1):
        c.collective_cast("g", 0, r, RANKS, "all_reduce", refs[r])
    clients[0].collective_cast("g", 0, 0, RANKS, "all_reduce", refs[0])
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # rank 0's poll sends its part; 1 and 2 still hold theirs
        assert clients[0].collective_poll("g", 0) is None
        time.sleep(0.01)
    assert clients[1].collective_poll("g", 0) is None  # sends rank 1's part; rank 2's is queued
    clients[2].synchronize()  # a call sends the queue first
    for r, c in enumerate(clients):
        assert polled(c, "g", 0)["done"]
        np.testing.assert_array_equal(values(c, refs[r]), sum(data(k) for k in range(RANKS)))


def test_one_poll_fetches_every_outcome_and_later_polls_need_no_message(served):
    clients, _ = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    for seq in range(3):  # #1: rank 1 posts another op; the others ran
        for r, c in enumerate(clients[:2] if seq == 1 else clients):
            c.collective_cast("g", seq, r, RANKS, "all_reduce", refs[r],
                              op="max" if seq == 1 and r == 1 else "sum")  # fmt: skip
    for c in clients:
        c.flush()
    assert polled(clients[0], "g", 2)["done"]
    assert set(clients[0]._outcomes.known) == {("g", 0), ("g", 1)}  # handed over with #2
    sent = []
    clients[0]._send = lambda *a: sent.append(a)  # a poll that sends anything fails the test
    assert clients[0].collective_poll("g", 0)["done"]
    with pytest.raises(InvalidRequestError, match="same collectives in the same order"):
        clients[0].collective_poll("g", 1)
    assert sent == [] and not clients[0]._outcomes.known
    del clients[0]._send
    with pytest.raises(InvalidRequestError, match="posted no part"):
        clients[0].collective_poll("g", 0)  # collected already


def test_all_gather_reduce_scatter_all_to_all_and_broadcast(served):
    clients, _ = served
    ins = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    gathered = [empty(c, r, (6 * RANKS,)) for r, c in enumerate(clients)]
    post_all(clients, 0, "all_gather", ins, gathered)
    for r, c in enumerate(clients):
        np.testing.assert_array_equal(
            values(c, gathered[r]), np.concatenate([data(k) for k in range(3)])
        )
    scattered = [empty(c, r, (2,)) for r, c in enumerate(clients)]
    post_all(clients, 1, "reduce_scatter", ins, scattered)
    total = sum(data(k) for k in range(RANKS))
    for r, c in enumerate(clients):
        np.testing.assert_array_equal(values(c, scattered[r]), total[2 * r : 2 * r + 2])
    swapped = [empty(c, r, (6,)) for r, c in enumerate(clients)]
    post_all(clients, 2, "all_to_all", ins, swapped)
    for r, c in enumerate(clients):
        expected = np.concatenate([data(k)[2 * r : 2 * r + 2] for k in range(RANKS)])
        np.testing.assert_array_equal(values(c, swapped[r]), expected)
    post_all(clients, 3, "broadcast", ins, None, root=1)
    for r, c in enumerate(clients):
        np.testing.assert_array_equal(values(c, ins[r]), data(1))


def test_send_recv_pairs_a_sender_and_a_receiver_in_separate_clients(served):
    clients, _ = served
    sent = upload(clients[0], 0, data(4))
    received = empty(clients[2], 2, (6,))
    assert clients[2].collective_post("p2p", 0, 1, 2, "send_recv", None, received) is None
    assert clients[0].collective_post("p2p", 0, 0, 2, "send_recv", sent)
    assert clients[2].collective_poll("p2p", 0)
    np.testing.assert_array_equal(values(clients[2], received), data(4))


def test_the_collective_takes_simulated_time_and_the_waiting_rank_stream_follows_it(served):
    clients, _ = served
    refs = [upload(c, r, np.ones(1 << 20, np.float32)) for r, c in enumerate(clients)]
    start = clients[0].synchronize()
    post_all(clients, 0, "all_reduce", refs, None)
    done = clients[0].collective_poll("g", 0)
    assert done["algorithm"] in ("ring", "tree", "hierarchical") and done["nbytes"] == 4 << 20
    timing = clients[0].collective_timing("g", 0)
    # After the wait, rank 0's stream is past the collective: 4 MiB over the chip links.
    assert clients[0].synchronize(0) >= timing["end"] > start + 1e-6
    # The engine's simulated time agrees with its own closed form for the plan it chose.
    assert timing["duration"] == pytest.approx(timing["predicted"], rel=0.05)
    assert timing["transfer_time"] <= timing["duration"]


def test_learning_a_collective_is_done_does_not_hold_back_the_next_launches(served):
    """As with NCCL, the rank's host does not wait for the collective: work it issues after the
    post (on its compute stream) overlaps it; only the stream that waits follows it."""
    clients, _ = served
    refs = [upload(c, r, np.ones(1 << 22, np.float32)) for r, c in enumerate(clients)]
    start = clients[0].synchronize()
    post_all(clients, 0, "all_reduce", refs, None, stream=1)
    assert clients[0].collective_poll("g", 0) is not None  # done: values are in
    small = upload(clients[0], 0, np.ones(1 << 16, np.float32))  # an add of it: ~8 us
    clients[0].launch(0, "add", [small, small], [small], stream=0)
    compute_end = clients[0].event_time(clients[0].record_event(0, 0))
    timing = clients[0].collective_timing("g", 0)
    assert timing["end"] - start > 10e-6  # 16 MiB over the chip links: tens of microseconds
    assert compute_end < timing["end"]  # the launch ran beside the collective, not after it


def test_the_posting_stream_waits_for_the_collective_from_the_post_on(served):
    """As NCCL's stream does: work queued on the posting stream after the post, before the other
    ranks arrive, runs after the collective's end (before, the stream waited only once the rank
    learned the collective was done)."""
    clients, _ = served
    refs = [upload(c, r, np.ones(1 << 16, np.float32)) for r, c in enumerate(clients)]
    clients[0].collective_post("g", 0, 0, RANKS, "all_reduce", refs[0], stream=1)
    after_post = clients[0].record_event(0, 1)  # queued now, while ranks 1 and 2 are missing
    for rank in (1, 2):
        clients[rank].collective_post("g", 0, rank, RANKS, "all_reduce", refs[rank], stream=1)
    assert clients[0].collective_poll("g", 0) is not None
    timing = clients[0].collective_timing("g", 0)
    assert clients[0].event_time(after_post) >= timing["end"] > 0


def test_a_post_after_a_stream_starts_once_the_work_issued_there_has_ended(served):
    """`after`: the rank's own stream. Its work so far comes first, as record_event + wait_event
    onto the collective's stream would say in two more messages; without it the collective's
    stream does not wait for that work."""
    clients, _ = served
    refs = [upload(c, r, np.ones(1 << 10, np.float32)) for r, c in enumerate(clients)]
    big = upload(clients[0], 0, np.ones(1 << 22, np.float32))  # an add of it: tens of us
    arrivals, kernel_ends = [], []
    for seq, after in enumerate((None, 0)):
        clients[0].launch(0, "add", [big, big], [big], stream=0)
        kernel = clients[0].record_event(0, 0)
        post_all(clients, seq, "all_reduce", refs, None, stream=1, after=after)
        assert clients[0].collective_poll("g", seq) is not None
        arrivals.append(clients[0].collective_timing("g", seq)["last_arrival"])
        kernel_ends.append(clients[0].event_time(kernel))
    assert arrivals[0] < kernel_ends[0]  # no `after`: beside the kernel
    assert arrivals[1] >= kernel_ends[1]  # after stream 0: once its kernel has ended
    with pytest.raises(InvalidRequestError, match="after"):
        clients[0].collective_post("g", 2, 0, RANKS, "all_reduce", refs[0], after="0")


def test_a_host_wait_for_a_device_whose_collective_waits_for_ranks_is_refused_by_name(served):
    """It could never end (the posting stream waits for ranks that have not come): the daemon
    says which collective, instead of advancing its clock by a hang timeout."""
    clients, _ = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    clients[0].collective_post("g", 0, 0, RANKS, "all_reduce", refs[0])
    with pytest.raises(InvalidRequestError, match=r"all_reduce #0 of group 'g'.*ranks \[1, 2\]"):
        clients[0].synchronize()
    with pytest.raises(InvalidRequestError, match="read on device 0"):
        values(clients[0], refs[0])
    clients[1].synchronize(1)  # the other devices are not held
    post_all(clients[1:], 0, "all_reduce", [None, *refs[1:]], None, first_rank=1)
    assert clients[0].collective_poll("g", 0) is not None
    clients[0].synchronize()
    np.testing.assert_array_equal(values(clients[0], refs[0]), sum(data(r) for r in range(RANKS)))


def test_timing_is_only_for_the_clients_own_collectives_that_ran(served):
    clients, _ = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    post_all(clients, 0, "all_reduce", refs, None)
    with pytest.raises(InvalidRequestError, match="no such collective"):
        clients[0].collective_timing("g", 1)
    with pytest.raises(InvalidRequestError, match="no such collective"):
        clients[0].collective_timing("other", 0)


def test_a_missing_rank_times_out_with_an_error_naming_it(served):
    clients, clock = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    clients[0].collective_post("g", 0, 0, RANKS, "all_reduce", refs[0], timeout=5.0)
    clients[1].collective_post("g", 0, 1, RANKS, "all_reduce", refs[1], timeout=5.0)
    assert clients[0].collective_poll("g", 0) is None
    clock.now = 5.5
    with pytest.raises(DeviceHangError, match=r"ranks \[2\] never arrived \(ranks \[0, 1\] did\)"):
        clients[0].collective_poll("g", 0)
    with pytest.raises(DeviceHangError, match=r"ranks \[2\] never arrived"):
        clients[1].collective_poll("g", 0)
    np.testing.assert_array_equal(values(clients[0], refs[0]), data(0))  # untouched


def test_a_host_wait_after_the_timeout_fails_the_collective_and_goes_on(served):
    clients, clock = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    clients[0].collective_post("g", 0, 0, RANKS, "all_reduce", refs[0], timeout=5.0)
    clock.now = 5.5
    clients[0].synchronize(0)  # not refused: the collective is over, failed
    with pytest.raises(DeviceHangError, match=r"ranks \[1, 2\] never arrived"):
        clients[0].collective_poll("g", 0)


def test_a_rank_that_disconnects_fails_the_collective_for_the_others(served):
    clients, _ = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    clients[0].collective_post("g", 0, 0, RANKS, "all_reduce", refs[0])
    clients[1].collective_post("g", 0, 1, RANKS, "all_reduce", refs[1])
    clients[1].close()
    with pytest.raises(DeviceHangError, match=r"rank 1's process disconnected"):
        clients[0].collective_poll("g", 0)


def test_ranks_calling_different_collectives_all_get_an_error(served):
    clients, _ = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    clients[0].collective_post("g", 0, 0, RANKS, "all_reduce", refs[0])
    with pytest.raises(InvalidRequestError, match="same collectives in the same order"):
        clients[1].collective_post("g", 0, 1, RANKS, "broadcast", refs[1], root=0)
    with pytest.raises(InvalidRequestError, match="rank 1's part was refused"):
        clients[0].collective_poll("g", 0)


def test_a_rank_cannot_post_another_clients_buffer(served):
    clients, _ = served
    theirs = upload(clients[0], 1, data(0))
    with pytest.raises(InvalidRequestError, match="belongs to another client"):
        clients[1].collective_post("g", 0, 1, RANKS, "all_reduce", theirs)


def test_a_buffer_freed_before_the_collective_runs_is_refused_not_written(served):
    clients, _ = served
    refs = [upload(c, r, data(r)) for r, c in enumerate(clients)]
    clients[0].collective_post("g", 0, 0, RANKS, "all_reduce", refs[0])
    clients[0].free(refs[0].buffer)
    clients[0].memory_stats(0)  # sends the queued free (a synchronize now is refused: below)
    clients[1].collective_post("g", 0, 1, RANKS, "all_reduce", refs[1])
    with pytest.raises(InvalidRequestError, match="freed"):
        clients[2].collective_post("g", 0, 2, RANKS, "all_reduce", refs[2])
    np.testing.assert_array_equal(values(clients[1], refs[1]), data(1))


def test_ranks_sharing_a_device_are_told_to_pick_their_own(served):
    clients, _ = served
    a, b = upload(clients[0], 0, data(0)), upload(clients[1], 0, data(1))
    clients[0].collective_post("two", 0, 0, 2, "all_reduce", a)
    with pytest.raises(InvalidRequestError, match="KPT_SIM_VISIBLE_DEVICES"):
        clients[1].collective_post("two", 0, 1, 2, "all_reduce", b)


@pytest.mark.parametrize(
    "header, message",
    [
        ({"group": "", "seq": 0, "rank": 0, "world": 2, "kind": "all_reduce"}, "group"),
        ({"group": "g", "seq": -1, "rank": 0, "world": 2, "kind": "all_reduce"}, "seq"),
        ({"group": "g", "seq": 0, "rank": 2, "world": 2, "kind": "all_reduce"}, "rank"),
        ({"group": "g", "seq": 0, "rank": 0, "world": 2, "kind": "gather"}, "unknown"),
        ({"group": "g", "seq": 0, "rank": 0, "world": 2, "kind": "all_reduce", "op": "xor"}, "op"),
        ({"group": "g", "seq": 0, "rank": 0, "world": 2, "kind": "all_reduce", "timeout": 1e9},
         "timeout"),
        ({"group": "g", "seq": 0, "rank": 0, "world": 2, "kind": "all_reduce", "op": "premul_sum"},
         "factor"),
        ({"group": "g", "seq": 0, "rank": 0, "world": 2, "kind": "all_reduce", "op": "premul_sum",
          "factor": float("nan")}, "factor"),
        ({"group": "g", "seq": 0, "rank": 0, "world": 2, "kind": "all_reduce", "factor": 2.0},
         "premul_sum"),
    ],
)  # fmt: skip
def test_bad_posts_are_refused_with_the_field_named(served, header, message):
    clients, _ = served
    with pytest.raises(InvalidRequestError, match=message):
        clients[0]._call("collective_post", {"input": None, **header})
