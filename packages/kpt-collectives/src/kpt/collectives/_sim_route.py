"""kpt_sim collectives: one collective inside the simulator daemon across the ranks' devices.

Each rank posts its part on its own connection (the daemon checks the buffers are that rank's),
numbered by the group's collective counter; the last rank's post runs it. Values are exact
(numpy on the daemon), time comes from the daemon's link and topology model and shows in its
trace. Needs every rank on ONE daemon (KPT_SIM_ENDPOINT) with its own device.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.futures import Future

from kpt.collectives._errors import CollectiveError, CollectiveTimeoutError
from kpt.collectives._work import DAEMON_GRACE_S, Completer, FutureWork, Pending, Posted

try:  # the [sim] extra
    from kpt.adapters.sim import daemon_access
    from kpt.sim import DeviceHangError, SimError
except ImportError:  # pragma: no cover - reported when a kpt_sim tensor arrives
    daemon_access = None
    DeviceHangError = SimError = None  # type: ignore[assignment,misc]

# The client streams collectives run behind, as NCCL's own streams: one per process group, and
# per point-to-point peer of a group (ProcessGroupNCCL gives each pair its own communicator and
# stream; on one stream, a ring of isend/irecv would wait on itself). Each waits for the
# rank's stream at the post and, from the post on, for the collective; the rank's stream waits
# for it only at work.wait() (or at the end of backward). Handed out downward from 1023 (the
# daemon allows stream numbers below 1024; torch.kpt_sim.Stream() numbers count up from 1);
# past COMM_STREAMS of them, numbers are shared.
COMM_STREAMS = 512
_next_comm_stream = itertools.count()
_comm_stream_lock = threading.Lock()


def comm_stream() -> int:
    with _comm_stream_lock:
        return 1023 - next(_next_comm_stream) % COMM_STREAMS


REDUCE_OPS = {
    dist.ReduceOp.SUM: "sum",
    dist.ReduceOp.AVG: "avg",
    dist.ReduceOp.MAX: "max",
    dist.ReduceOp.MIN: "min",
    dist.ReduceOp.PRODUCT: "prod",
    dist.ReduceOp.PREMUL_SUM: "premul_sum",  # the factor travels apart: premul_factor(op)
}


def require_sim() -> None:
    if daemon_access is None:
        raise CollectiveError(
            "kpt_sim tensors need kpt-adapter-sim: pip install 'kpt-collectives[sim]'"
        )


def sim_kind() -> str:
    """This rank's device kind for route agreement: ranks on one daemon share it."""
    require_sim()
    return f"kpt_sim@{daemon_access.endpoint()}"


def reduce_name(op: Any) -> str:
    name = REDUCE_OPS.get(getattr(op, "op", op))  # a ReduceOp object, or its RedOpType
    if name is None:
        raise _unsupported(op)
    return name


def sim_reduce_op(op: Any) -> tuple[str, float | None]:
    """What a post sends as `op` and `factor`: reduce_name(op) and premul_factor(op), with one
    lookup of the op."""
    name = REDUCE_OPS.get(getattr(op, "op", op))
    if name is None:
        raise _unsupported(op)
    return name, (premul_factor(op) if name == "premul_sum" else None)


def _unsupported(op: Any) -> CollectiveError:
    return CollectiveError(
        f"reduce op {op} is not supported on kpt_sim; use SUM, AVG, MAX, MIN, PRODUCT or PREMUL_SUM"
    )


def premul_factor(op: Any) -> float | None:
    """The scale of a PREMUL_SUM op (torch.distributed._make_nccl_premul_sum(factor)): each rank
    multiplies its own input by its own factor inside the reduction; None for other ops."""
    if getattr(op, "op", op) != dist.ReduceOp.PREMUL_SUM:
        return None
    factor = op.factor
    if isinstance(factor, torch.Tensor):  # a factor given as a one-element tensor
        factor = factor.item()
    return float(factor)


class SimRoute:
    """Posts this rank's parts to the daemon; a Completer finishes the Work objects."""

    def __init__(self, group_id: str, rank: int, world: int, timeout_s: float) -> None:
        require_sim()
        self.group_id, self.rank, self.world = group_id, rank, world
        self.timeout_s = timeout_s
        self._seq = itertools.count()
        self._p2p: dict[tuple[int, int, int], itertools.count] = {}
        self._stream = comm_stream()
        self._peer_streams: dict[tuple[int, bool], int] = {}
        self._completer = Completer(group_id)
        self._lock = threading.Lock()  # one Posted collective polls at a time (no lock each)

    def close(self) -> None:
        self._completer.stop()

    def settle(self) -> None:
        """Wait until every collective this process posted ran; raises the first failure."""
        daemon_access.client().holds.all()

    # -- collectives: tensors are contiguous kpt_sim tensors of this rank --------------------
    def run(
        self,
        kind: str,
        input: torch.Tensor | None,
        output: torch.Tensor | None,
        result: Any,
        op: str = "sum",
        factor: float | None = None,
        root: int | None = None,
        finish: Callable[[], None] | None = None,
        group: str | None = None,
        rank: int | None = None,
        world: int | None = None,
        seq: int | None = None,
        comm: int | None = None,
    ) -> dist.Work:
        group = group or self.group_id
        rank = self.rank if rank is None else rank
        world = self.world if world is None else world
        seq = next(self._seq) if seq is None else seq
        comm = self._stream if comm is None else comm
        what = f"{kind} #{seq} of group {group!r} (rank {rank} of {world})"
        tensor = input if input is not None else output
        index = tensor.device.index or 0
        stream = daemon_access.current_stream(index)
        client = daemon_access.client()
        refs = [None if t is None else daemon_access.wire_ref(t) for t in (input, output)]
        try:
            # A cast, queued with the launches: the host does not wait for the daemon, and a
            # refusal comes from the poll. The collective runs on `comm` after the work issued
            # to `stream` so far (`after`: one message, not an event recorded and waited on).
            client.collective_cast(group, seq, rank, world, kind, *refs, op=op, factor=factor,
                                   root=root, stream=comm, after=stream,
                                   timeout=self.timeout_s)  # fmt: skip
        except Exception as exc:
            raise classify(exc, what) from exc
        now = time.monotonic()
        deadline = now + self.timeout_s + DAEMON_GRACE_S
        if finish is None:  # complete now, as NCCL's Work does; the client holds the buffers
            work = FutureWork(None, what, result)
            posted = Posted(client, group, seq, what, deadline, classify, self._lock, work,
                            (input, output), (index, stream, comm))  # fmt: skip
            posted.hold = client.holds.add([r[0] for r in refs if r is not None], posted, group)
            work.pending, work.join, work.measure = posted, posted.join, posted.measure
        else:
            future: Future = Future()
            work = FutureWork(future, what)
            work.pending = Pending(
                what=what,
                poll=functools.partial(client.collective_poll, group, seq),
                future=future,
                result=result,
                deadline=deadline,
                classify=lambda exc: classify(exc, what),
                finish=finish,
                keep=(input, output),
                work=work,
                posted=now,
            )
            work.join = StreamJoin(client, index, stream, comm)
            work.measure = lambda: client.collective_timing(group, seq)
        work.join_at_backward_end()
        self._completer.submit(work.pending)
        return work

    def p2p(self, tensor: torch.Tensor, peer: int, tag: int, sending: bool) -> dist.Work:
        """send/recv as a two-part collective named after the ordered pair and the tag."""
        src, dst = (self.rank, peer) if sending else (peer, self.rank)
        counter = self._p2p.setdefault((src, dst, tag), itertools.count())
        return self.run(
            "send_recv",
            tensor if sending else None,
            None if sending else tensor,
            [tensor],
            group=f"{self.group_id}/p2p/{src}>{dst}/{tag}",
            rank=0 if sending else 1,
            world=2,
            seq=next(counter),
            comm=self._peer_stream(peer, sending),
        )

    def _peer_stream(self, peer: int, sending: bool) -> int:
        # Sends and receives to one peer on separate streams: rank 0's send waits for rank 1's
        # receive, which would otherwise queue behind rank 1's own send to rank 0 (a pair
        # exchanging both ways would wait on itself; NCCL's eager sends of small messages
        # never do).
        key = (peer, sending)
        if key not in self._peer_streams:
            self._peer_streams[key] = comm_stream()
        return self._peer_streams[key]


class StreamJoin:
    """Makes a rank's stream wait for everything on its collective's stream so far, once (one
    queued op, no round trip): what work.wait() does to the current stream with NCCL."""

    def __init__(self, client: Any, device: int, stream: int, comm: int) -> None:
        self._client, self._device, self._stream, self._comm = client, device, stream, comm
        self._done = False

    def __call__(self) -> None:
        if self._done:
            return
        self._done = True
        self._client.wait_stream(self._device, self._stream, self._comm)


def classify(exc: Exception, what: str = "") -> Exception:
    """The kpt.collectives error for a failure the daemon or the connection reported."""
    if isinstance(exc, CollectiveError):
        return exc
    prefix = f"{what}: " if what and what not in str(exc) else ""
    if DeviceHangError is not None and isinstance(exc, DeviceHangError):
        return CollectiveTimeoutError(f"{prefix}{exc}")
    if SimError is not None and isinstance(exc, SimError):
        return CollectiveError(f"{prefix}{type(exc).__name__}: {exc}")
    return CollectiveError(f"{prefix}{type(exc).__name__}: {exc}")
