"""Collectives whose ranks are separate clients (torch.distributed ranks are processes).

Each rank posts its part (``collective_post``); when the last part of a group's collective is
in, the daemon runs ONE collective over the ranks' devices: the link model times it, the values
are combined from every rank's buffers, each checked in its own client's context. Ranks learn
the outcome from the post that completed it or from ``collective_poll``. The server thread never
waits for a rank: a missing rank is noticed when a poll finds the meeting past its deadline, and
every rank that did arrive gets an error naming the missing ones. A rank whose client
disconnects fails the meetings it was part of at once.

Simulated time follows CUDA + NCCL: the collective runs on its own stream; it starts when every
rank's stream has reached the post (an event recorded at the post), and the stream the post
names (the rank's own "NCCL stream") waits from the post on for the collective's end, an event
whose place is known only once the last rank is in. So a rank may go on at once, as with NCCL:
its other streams run beside the collective until they wait for that stream. The rank's client
keeps its host from reading or touching the collective's buffers before the outcome
(kpt.sim._client_holds). Learning that a collective is done is not a host wait: the simulation
is not run to its end then (that would put every later launch of every client after it). Its
simulated times are asked for apart (``collective_timing``), and that waits, as reading an
event's elapsed time does. Messages and semantics: docs/collectives.md.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kpt.sim import _daemon_collectives as collectives
from kpt.sim._collectives import CollectiveResult
from kpt.sim._daemon_buffers import BufferTable, bad, field_int
from kpt.sim._errors import DeviceHangError, InvalidRequestError, SimError
from kpt.sim._executors import Executor, View
from kpt.sim._simulator import Simulator
from kpt.sim._streams import Marker

MAX_WORLD = 4096
MAX_GROUP_CHARS = 256
MAX_MEETINGS = 1 << 14  # collectives waiting for parts, over all groups
MAX_OUTCOMES_PER_CLIENT = 1 << 12  # finished collectives a client has not polled yet
MAX_TIMINGS_PER_CLIENT = 1 << 12  # a client's newest collectives whose times it may ask for
MAX_TIMEOUT_S = 24 * 3600.0
# One engine stream (per device) runs every multi-client collective, as NCCL's own stream does.
COLLECTIVE_STREAM_OWNER = b"\x00kpt-sim-rendezvous"
KINDS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all", "send_recv")
# Fields every rank must give the same value for (else the collective is refused for all).
AGREED = ("kind", "world", "op", "root", "algorithm")


@dataclass
class Part:
    client: bytes
    rank: int
    device: int
    ready: int  # engine event: the rank's stream reached the post
    input: Any  # wire ref or None (a send_recv receiver posts only its output)
    output: Any
    end: Marker  # the collective's end on this rank's device; the posting stream waits for it
    factor: float | None = None  # op premul_sum: this rank's input is scaled by it


@dataclass
class Meeting:
    """One collective of one group: the parts in so far and what every rank agreed on."""

    group: str
    seq: int
    terms: dict[str, Any]
    deadline: float
    parts: dict[int, Part] = field(default_factory=dict)

    def name(self) -> str:
        return f"{self.terms['kind']} #{self.seq} of group {self.group!r}"

    def missing(self) -> list[int]:
        return [r for r in range(self.terms["world"]) if r not in self.parts]


@dataclass
class Outcome:
    """What one rank gets back: the collective's timing figures, or an error."""

    timing: dict[str, Any] = field(default_factory=dict)  # algorithm, predicted, nbytes
    error: SimError | None = None


class Rendezvous:
    """Meetings waiting for parts and outcomes waiting to be polled; owned by the daemon."""

    def __init__(
        self,
        sim: Simulator,
        buffers: BufferTable,
        executor: Executor | None,
        engine_stream: Callable[..., int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """executor: None in timing-only mode; engine_stream(client, header[, field]): the
        engine stream behind the client's stream number (the daemon's mapping)."""
        self.sim = sim
        self.buffers = buffers
        self.executor = executor
        self.engine_stream = engine_stream
        self.clock = clock
        self.meetings: dict[tuple[str, int], Meeting] = {}
        self.outcomes: dict[bytes, dict[tuple[str, int], Outcome]] = {}
        self.results: dict[bytes, OrderedDict[tuple[str, int], CollectiveResult]] = {}
        self.posted_on: Counter[int] = Counter()  # device -> parts waiting for their meeting

    # -- handlers (msg, state, client_id), registered by the daemon ------------------------------
    def post(self, msg: Any, state: Any, client_id: bytes) -> dict:
        """This rank's part; {"done": True} when it completed the collective (then raises its
        error, if it failed), {"done": False} while other ranks are still missing."""
        key, done = self._post(msg.header, client_id)
        return self._take(client_id, key) if done else {"done": False}

    def post_cast(self, header: dict, state: Any, client_id: bytes) -> None:
        """The same part, sent without waiting for an answer (a cast): a refusal becomes the
        collective's outcome for this client, which collective_poll raises. Only a post whose
        group and number cannot be read is refused as a cast is (at the client's next call)."""
        try:
            self._post(header, client_id)
        except SimError as error:
            key = _key(header)
            if key is None or key in self.outcomes.get(client_id, {}):
                raise
            self._record(client_id, key, Outcome({}, error))

    def _post(self, header: dict, client_id: bytes) -> tuple[tuple[str, int], bool]:
        """Add this rank's part; (its key, whether the collective already has an outcome)."""
        group, seq = _group_field(header), field_int(header, "seq")
        terms = _terms(header)
        rank = field_int(header, "rank", high=terms["world"])
        timeout = header.get("timeout", 300.0)
        if type(timeout) not in (int, float) or not 0 < timeout <= MAX_TIMEOUT_S:
            raise bad(
                f"collective_post: 'timeout' = {timeout!r:.40} must be in (0, {MAX_TIMEOUT_S:g}] s"
            )
        key = (group, seq)
        if key in self.outcomes.get(client_id, {}):
            raise bad(f"collective #{seq} of group {group!r} already ran; number each one anew")
        meeting = self._meeting(key, terms, float(timeout))
        try:
            if meeting.terms != terms:
                raise bad(
                    f"rank {rank} posted {_describe(terms)} to {meeting.name()}, but the ranks "
                    f"before it posted {_describe(meeting.terms)}: every rank must call the same "
                    "collectives in the same order"
                )
            if rank in meeting.parts:
                raise bad(f"rank {rank} posted twice to {meeting.name()}; each rank posts once")
            meeting.parts[rank] = part = self._part(header, terms, rank, client_id)
            self.posted_on[part.device] += 1
        except SimError as error:  # a refused part fails the collective for every rank
            self._finish(meeting, error=_for_all(error, rank, meeting))
            raise
        if not meeting.missing():
            self._run(meeting)
            return key, True
        self._expire(meeting)
        return key, key not in self.meetings

    def poll(self, msg: Any, state: Any, client_id: bytes) -> dict:
        """Every outcome this client has not collected, its asked-for collective's and the
        others' alike, each handed over once: {"outcomes": [[group, seq, timing, error], ...]},
        error [code, message] or None. The asked-for one may still wait for ranks (then it is
        not among them); a collective this client never posted a part of is refused."""
        key = (_group_field(msg.header), field_int(msg.header, "seq"))
        meeting = self.meetings.get(key)
        if meeting is not None:
            self._expire(meeting)
        table = self.outcomes.pop(client_id, {})
        if key not in table and key not in self.meetings:
            if table:
                self.outcomes[client_id] = table
            raise bad(f"collective #{key[1]} of group {key[0]!r}: this client posted no part "
                      "(or already collected its outcome)")  # fmt: skip
        return {"outcomes": [[group, seq, outcome.timing, _wire_error(outcome.error)]
                             for (group, seq), outcome in table.items()]}  # fmt: skip

    def timing(self, msg: Any, state: Any, client_id: bytes) -> dict:
        """Simulated seconds of one of this client's collectives that ran: start and
        last_arrival (the first and the last rank's arrival), end, duration (from the first),
        transfer_time (from the last: what `predicted` forecasts). The host waits for it."""
        key = (_group_field(msg.header), field_int(msg.header, "seq"))
        result = self.results.get(client_id, {}).get(key)
        if result is None:
            raise bad(
                f"collective #{key[1]} of group {key[0]!r}: this client has no such collective "
                f"that ran (its newest {MAX_TIMINGS_PER_CLIENT} are kept)"
            )
        return {"start": result.start, "last_arrival": result.last_arrival, "end": result.end,
                "duration": result.duration, "transfer_time": result.transfer_time,
                "algorithm": result.algorithm, "predicted": result.predicted}  # fmt: skip

    def refuse_host_wait(self, devices: Iterable[int], what: str) -> None:
        """Raise if a part posted on one of `devices` waits for ranks: the stream that posted it
        waits for the collective, so a host wait for that device would never end."""
        if not any(self.posted_on.get(d) for d in devices):
            return
        waiting = [(p.device, m) for m in self.meetings.values()
                   for p in m.parts.values() if p.device in devices]  # fmt: skip
        for _, meeting in waiting:
            self._expire(meeting)  # one past its deadline fails now: its streams go on
        if not any(self.posted_on.get(d) for d in devices):
            return
        device, meeting = next((d, m) for d, m in waiting if (m.group, m.seq) in self.meetings)
        raise bad(
            f"{what} on device {device}: {meeting.name()} was posted there and waits for ranks "
            f"{meeting.missing()}; the posting stream waits for it, so this would never end. "
            "Wait until the collective is done (collective_poll) first"
        )

    def client_gone(self, client_id: bytes) -> None:
        """A rank's process is gone: the collectives it joined fail for the ranks still there."""
        self.outcomes.pop(client_id, None)
        self.results.pop(client_id, None)
        for meeting in list(self.meetings.values()):
            gone = [p.rank for p in meeting.parts.values() if p.client == client_id]
            if gone:
                error = DeviceHangError(
                    f"{meeting.name()}: rank {gone[0]}'s process disconnected before ranks "
                    f"{meeting.missing()} arrived; the collective cannot complete. Restart the "
                    "job (or its failed ranks) from the last checkpoint"
                )
                self._finish(meeting, error=error, skip=client_id)

    # -- internals ----------------------------------------------------------------------------
    def _meeting(self, key: tuple[str, int], terms: dict, timeout: float) -> Meeting:
        meeting = self.meetings.get(key)
        if meeting is None:
            if len(self.meetings) >= MAX_MEETINGS:
                raise bad(f"{len(self.meetings)} collectives wait for parts, the limit; a group "
                          "posts collectives that some ranks never join")  # fmt: skip
            meeting = Meeting(key[0], key[1], terms, self.clock() + timeout)
            self.meetings[key] = meeting
        return meeting

    def _part(self, header: dict, terms: dict, rank: int, client_id: bytes) -> Part:
        kind = terms["kind"]
        factor = _factor_field(header, terms["op"])
        input_ref, output_ref = header.get("input"), header.get("output")
        receiver = kind == "send_recv" and rank == 1
        if (input_ref is None) != receiver:
            wanted = "no input (a receiver)" if receiver else "an input tensor"
            raise bad(f"rank {rank} of {kind}: must post {wanted}")
        if output_ref is None and (
            receiver or kind not in ("all_reduce", "broadcast", "send_recv")
        ):
            raise bad(f"rank {rank} of {kind}: must post an output tensor")
        posted = [r for r in (input_ref, output_ref) if r is not None]
        pairs = self.buffers.refs(posted, f"{kind} rank {rank}", None, client_id)
        devices = {b.device for _, b in pairs}
        if len(devices) != 1:
            raise bad(f"rank {rank} of {kind}: input and output live on devices {sorted(devices)}; "
                      "a rank's tensors must share its device")  # fmt: skip
        device = devices.pop()
        stream = self.engine_stream(client_id, header)
        if header.get("after") is not None:
            # The rank's own stream: the collective starts after the work issued there so far.
            self.sim.wait_stream(device, stream, self.engine_stream(client_id, header, "after"))
        ready = self.sim.record_event(device, stream)
        end = self.sim.future_event()
        self.sim.wait_for(end, device, stream)
        return Part(client_id, rank, device, ready, input_ref, output_ref, end, factor)

    def _views(self, meeting: Meeting) -> tuple[list[View], list[View], list[int]]:
        """Every rank's views, checked again in its own client's context (a buffer freed since
        the post is refused, never written)."""
        inputs, outputs, devices = [], [], []
        for rank in range(meeting.terms["world"]):
            part = meeting.parts[rank]
            devices.append(part.device)
            what = f"{meeting.terms['kind']} rank {rank}"
            for ref, into in ((part.input, inputs), (part.output, outputs)):
                if ref is not None:
                    into.append(self.buffers.refs([ref], what, None, part.client)[0][0])
        return inputs, outputs, devices

    def _run(self, meeting: Meeting) -> None:
        terms = meeting.terms
        kind = terms["kind"]
        try:
            inputs, outputs, devices = self._views(meeting)
            if len(set(devices)) != len(devices):
                raise bad(
                    f"{meeting.name()}: ranks share daemon devices {devices}; give each rank its "
                    "own device (KPT_SIM_VISIBLE_DEVICES=<index> per process)"
                )
            root = terms["root"]
            collectives.check_shapes(kind, inputs, outputs, None)
            nbytes = collectives.timed_bytes(kind, inputs, outputs)
            stream = self.engine_stream(COLLECTIVE_STREAM_OWNER, {})
            for part in meeting.parts.values():
                self.sim.wait_event(part.ready, part.device, stream)
            if kind == "send_recv":
                options: dict[str, Any] = {"src": devices[0], "dst": devices[1]}
                timed_devices = None
            else:
                options = {"root": None if root is None else devices[root]}
                timed_devices = devices
            timed = self.sim.collective(kind, nbytes, timed_devices, algorithm=terms["algorithm"],
                                stream=stream, **options)  # fmt: skip
            if self.executor is not None:
                factors = None
                if terms["op"] == "premul_sum":
                    factors = [meeting.parts[r].factor for r in range(terms["world"])]
                collectives.compute(self.executor, kind, inputs, outputs, terms["op"], root or 0,
                                    factors)  # fmt: skip
            for part in meeting.parts.values():
                self.sim.record_into(part.end, part.device, stream)
        except SimError as error:
            self._finish(meeting, error=error)
            return
        except (ValueError, TypeError, ArithmeticError) as exc:  # numpy refusing the values
            self._finish(meeting, error=bad(f"{meeting.name()}: {exc}"))
            return
        # Not its start or end: reading them would run the simulation to its end now.
        timing = {"algorithm": timed.algorithm, "predicted": timed.predicted, "nbytes": nbytes}
        self._finish(meeting, timing=timing, result=timed)

    def _finish(
        self,
        meeting: Meeting,
        error: SimError | None = None,
        skip: bytes | None = None,
        timing: dict[str, Any] | None = None,
        result: CollectiveResult | None = None,
    ) -> None:
        self.meetings.pop((meeting.group, meeting.seq), None)
        for part in meeting.parts.values():
            self.posted_on[part.device] -= 1
            if error is not None:  # it will not run: the streams that wait for it go on
                self.sim.complete_now(part.end)
            if part.client == skip:
                continue
            if result is not None:
                kept = self.results.setdefault(part.client, OrderedDict())
                kept[(meeting.group, meeting.seq)] = result
                if len(kept) > MAX_TIMINGS_PER_CLIENT:
                    kept.popitem(last=False)
            self._record(part.client, (meeting.group, meeting.seq), Outcome(timing or {}, error))

    def _record(self, client_id: bytes, key: tuple[str, int], outcome: Outcome) -> None:
        table = self.outcomes.setdefault(client_id, {})
        if len(table) >= MAX_OUTCOMES_PER_CLIENT:
            table.pop(next(iter(table)))  # the oldest unpolled outcome is forgotten
        table[key] = outcome

    def _expire(self, meeting: Meeting) -> None:
        if self.clock() <= meeting.deadline or not meeting.missing():
            return
        arrived = sorted(meeting.parts)
        self._finish(
            meeting,
            error=DeviceHangError(
                f"{meeting.name()}: ranks {meeting.missing()} never arrived (ranks {arrived} did) "
                "within the collective's timeout; the missing ranks' processes are slow, hung or "
                "dead, or they called a different collective"
            ),
        )

    def _take(self, client_id: bytes, key: tuple[str, int]) -> dict:
        table = self.outcomes.get(client_id, {})
        outcome = table.pop(key)
        if not table:
            self.outcomes.pop(client_id, None)
        if outcome.error is not None:
            raise outcome.error
        return {"done": True, **outcome.timing}


def _wire_error(error: SimError | None) -> list | None:
    return None if error is None else [type(error).__name__, str(error)]


def _key(header: dict) -> tuple[str, int] | None:
    """A post's (group, seq), or None if either cannot be read."""
    try:
        return _group_field(header), field_int(header, "seq")
    except SimError:
        return None


def _group_field(header: dict) -> str:
    group = header.get("group")
    if type(group) is not str or not 0 < len(group) <= MAX_GROUP_CHARS:
        raise bad(f"field 'group' = {group!r:.60} must be a name of 1-{MAX_GROUP_CHARS} characters")
    return group


def _terms(header: dict) -> dict[str, Any]:
    kind = header.get("kind")
    if kind not in KINDS:
        raise bad(f"collective_post: kind {kind!r:.40} unknown; use one of {', '.join(KINDS)}")
    world = field_int(header, "world", low=1, high=MAX_WORLD + 1)
    if kind == "send_recv" and world != 2:
        raise bad(f"send_recv: world = {world}; a send/recv pair is 2 parts (sender rank 0)")
    op, algorithm = header.get("op", "sum"), header.get("algorithm")
    if op not in collectives.REDUCTIONS:
        raise bad(f"collective_post: op {op!r:.40} unknown; use one of "
                  f"{', '.join(collectives.REDUCTIONS)}")  # fmt: skip
    if algorithm is not None and type(algorithm) is not str:
        raise bad(f"collective_post: algorithm {algorithm!r:.40} must be a name or absent")
    root = header.get("root")
    if root is not None and (type(root) is not int or not 0 <= root < world):
        raise bad(f"collective_post: root {root!r:.40} must be a rank in [0, {world})")
    if kind == "broadcast" and root is None:
        raise bad("broadcast: give the root rank")
    return {"kind": kind, "world": world, "op": op, "root": root, "algorithm": algorithm}


def _factor_field(header: dict, op: str) -> float | None:
    """This rank's premul_sum factor (NCCL's: each rank scales its own input)."""
    value = header.get("factor")
    factors = collectives.scale_factors(op, None if value is None else [value], 1)
    return factors[0] if factors else None


def _describe(terms: dict) -> str:
    return ", ".join(f"{k}={terms[k]!r}" for k in AGREED if terms[k] is not None)


def _for_all(error: SimError, rank: int, meeting: Meeting) -> SimError:
    """The error every rank of a collective gets when one rank's part was refused."""
    message = f"{meeting.name()}: rank {rank}'s part was refused: {error}"
    typed = type(error)(message) if isinstance(error, InvalidRequestError) else SimError(message)
    return typed
