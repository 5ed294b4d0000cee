"""SimClient's calls for collectives whose ranks are separate clients (the daemon's rendezvous,
kpt.sim._daemon_rendezvous; messages and semantics: docs/collectives.md)."""

from __future__ import annotations

import threading
from typing import Any

from kpt.sim._errors import ERRORS, SimError


def _ref_to_wire(ref: Any) -> list:
    if type(ref) is list:  # already in wire form (a hot caller builds it itself); daemon checks
        return ref
    buffer, offset, dtype, shape, strides = ref
    return [
        int(buffer),
        int(offset),
        str(dtype),
        [int(s) for s in shape],
        [int(s) for s in strides],
    ]


class Outcomes:
    """Collectives' outcomes the daemon handed over before they were polled: (group, seq) ->
    (timing, error as [code, message] or None)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.known: dict[tuple[str, int], tuple[dict, list | None]] = {}

    def add(self, outcomes: list) -> None:
        for group, seq, timing, error in outcomes:
            self.known[(group, seq)] = (timing, error)


class RendezvousCalls:
    """Mixed into SimClient (its `_call`, `_send`, `_queue`): post a rank's part, poll the
    outcome, ask its simulated times."""

    def collective_post(
        self, group: str, seq: int, rank: int, world: int, kind: str,
        input: Any = None, output: Any = None, **terms: Any,
    ) -> dict | None:  # fmt: skip
        """This rank's part of a collective whose ranks are separate clients. None while ranks
        are missing; once it ran, its algorithm, predicted seconds and bytes (its simulated
        times: collective_timing).

        terms: op, factor (op premul_sum: this rank's input is scaled by it, as NCCL's
        ncclRedOpCreatePreMulSum), root (a rank), algorithm, stream, timeout (s). Queued work
        runs first.
        Messages and semantics: docs/collectives.md."""
        header = self._post_header(group, seq, rank, world, kind, input, output, terms)
        reply = self._call("collective_post", header).header
        return reply if reply.get("done") else None

    def collective_cast(
        self, group: str, seq: int, rank: int, world: int, kind: str,
        input: Any = None, output: Any = None, **terms: Any,
    ) -> None:  # fmt: skip
        """collective_post without waiting for the daemon's answer: queued with the launches,
        as an NCCL call is one enqueue on a stream. It goes with the next batch: at BATCH_OPS,
        before any call, or before this client's next poll of any collective (kpt.collectives'
        completion thread polls each post within about a millisecond). The daemon times it on
        the streams, not by when it arrives, so that wait costs no simulated time. Its refusal,
        like its failure, comes from collective_poll."""
        header = self._post_header(group, seq, rank, world, kind, input, output, terms)
        self._queue("collective_cast", header)

    def _post_header(self, group, seq, rank, world, kind, input, output, terms) -> dict:
        input = None if input is None else _ref_to_wire(input)
        output = None if output is None else _ref_to_wire(output)
        # another group's collective on these buffers must have run first
        self.holds.touching([r[0] for r in (input, output) if r is not None], group)
        return {"group": group, "seq": seq, "rank": rank, "world": world, "kind": kind,
                "input": input, "output": output, **terms}  # fmt: skip

    def collective_poll(self, group: str, seq: int) -> dict | None:
        """None while a posted collective waits for ranks; once it ran (raises its error), its
        algorithm, predicted seconds and bytes. (The posting stream waits for it from the post
        on; learning it ran moves no stream.) One round trip fetches the outcomes of all this
        client's collectives that have one; later polls for those need none."""
        key = (group, seq)
        with self._outcomes.lock:  # one fetch at a time: each outcome is handed over once
            if key not in self._outcomes.known:
                # The queued casts go first, on their own: the part asked about may be among
                # them. Not as the poll's prelude: a call carrying them holds the queue until
                # it is answered, which would stall the thread issuing work (kpt.collectives
                # polls from its own thread).
                self.flush()
                reply = self._send("collective_poll", {"group": group, "seq": seq}, (), False)
                self._outcomes.add(reply.header["outcomes"])
            outcome = self._outcomes.known.pop(key, None)
        if outcome is None:
            return None
        timing, error = outcome
        if error is not None:
            code, message = error
            raise ERRORS.get(code, SimError)(message)
        return {"done": True, **timing}

    def collective_timing(self, group: str, seq: int) -> dict:
        """Simulated start, last_arrival, end, duration and transfer_time of a collective of
        this client's that ran (waits for it, as an event's elapsed time does)."""
        return dict(self._call("collective_timing", {"group": group, "seq": seq}).header)
