"""The aggregator's books: which worker sent which summary, what was merged, what was refused.

Nothing a message says is trusted before it is checked. Each worker numbers its summaries
(``seq`` 1, 2, 3, ...) and is bound to the connection it first spoke from: a summary whose
number was already seen is a replay, ignored and counted; one from another connection that
names the worker is refused; a payload no real summary could hold (NaN, n over 2**53, a
negative m2, ...) is refused before anything changes. Every outcome is counted per worker, so
``status`` shows what was ignored and why, and which workers went silent without saying done.

A ``SummaryLedger`` is not thread-safe: its owner (the Aggregator) holds a lock around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kpt.abtest._summary import MAX_COUNT, Summary

MAX_WORKERS = 4096  # distinct worker names one evaluation keeps books for (memory stays bounded)
MAX_NAME_CHARS = 128
MAX_ERROR_CHARS = 4000
_MERGE_BATCH = 512  # pending summaries that trigger a fold


class Refused(ValueError):
    """A message the ledger would not take; the text says what was wrong and what to do."""


@dataclass
class WorkerBook:
    """One worker's account, as ``status`` shows it."""

    client: bytes  # the connection the worker first spoke from; only it may speak for the worker
    next_seq: int = 1
    merged: int = 0  # summaries merged
    replayed: int = 0  # summaries whose seq was already seen: ignored
    refused: int = 0  # summaries refused as invalid (the last reason is kept)
    skipped: int = 0  # sequence numbers that never arrived (lost on the way)
    last_refusal: str | None = None
    sent: int | None = None  # how many summaries the worker says it sent (in its ``done``)
    done: bool = False
    error: str | None = None
    connected: bool = True
    last_seen: float = 0.0

    def state(self) -> str:
        if self.done:
            return "failed" if self.error else "done"
        return "streaming" if self.connected else "lost"

    def missing(self) -> int:
        """Summaries the worker sent that were never merged (lost on the way, or refused)."""
        if self.sent is None:
            return self.skipped + self.refused
        return max(0, self.sent - self.merged)

    def view(self, now: float) -> dict[str, Any]:
        return {
            "state": self.state(),
            "summaries": self.merged,
            "replayed": self.replayed,
            "refused": self.refused,
            "missing": self.missing(),
            "sent": self.sent,
            "done": self.done,
            "error": self.error,
            "last_refusal": self.last_refusal,
            "silent_s": round(now - self.last_seen, 3),
        }


class SummaryLedger:
    """Per-arm merged summaries and per-worker books; ``take_summary`` / ``take_done`` change
    them only after the whole message was checked, so a bad message never corrupts them."""

    def __init__(self, max_workers: int = MAX_WORKERS) -> None:
        self.max_workers = max_workers
        self._arms: dict[str, Summary] = {}
        # Summaries wait here and are folded in by one vectorized merge_all per arm: much
        # cheaper than one merge per message when thousands arrive between two reads.
        self._pending: dict[str, list[Summary]] = {}
        self._pending_count = 0
        self._counts: dict[str, int] = {}  # values per arm, merged or pending
        self._workers: dict[str, WorkerBook] = {}
        self.received = 0  # summaries merged
        self.replayed = 0
        self.refused = 0  # summaries and done reports refused, whoever sent them
        self.first_at = self.last_at = 0.0  # times of the first and last merged summary

    # -- messages ------------------------------------------------------------------------------
    def take_summary(self, header: Any, client: bytes, now: float) -> str:
        """Merge one ``summary`` message; "merged" or "replayed"; Refused if invalid."""
        try:
            worker = _name(header, "worker")
            book = self._book(worker, client, now)
        except Refused:
            self.refused += 1
            raise
        seq = header.get("seq")
        if seq.__class__ is not int or seq < 1:
            return self._refuse(book, f"'seq' is {seq!r:.40}; number summaries 1, 2, 3, ...")
        if seq < book.next_seq:
            book.replayed += 1
            self.replayed += 1
            return "replayed"
        book.skipped += seq - book.next_seq
        book.next_seq = seq + 1  # a refused summary uses its number too: a replay of it is one
        try:
            arm = _name(header, "arm")
            summary = Summary.from_dict(header.get("summary"))
        except (Refused, ValueError, TypeError, AttributeError) as error:
            return self._refuse(book, f"summary {seq} unreadable: {error}")
        total = self._counts.get(arm, 0) + summary.n
        if total > MAX_COUNT:
            return self._refuse(
                book, f"arm {arm!r} would hold {total} values, over 2**53; start a new evaluation"
            )
        if summary.n:  # an empty summary adds nothing, not even an arm with no values
            self._counts[arm] = total
            self._pending.setdefault(arm, []).append(summary)
            self._pending_count += 1
        if self._pending_count >= _MERGE_BATCH:
            self.fold()
        book.merged += 1
        self.received += 1
        self.last_at = now
        self.first_at = self.first_at or now
        return "merged"

    def take_done(self, header: Any, client: bytes, now: float) -> dict[str, Any]:
        """A worker's ``done``: ``{"worker", "error": str | None, "sent": int}``."""
        try:
            book = self._book(_name(header, "worker"), client, now)
        except Refused:
            self.refused += 1
            raise
        error, sent = header.get("error"), header.get("sent")
        if error is not None and not isinstance(error, str):
            error = repr(error)
        if sent is not None and (sent.__class__ is not int or sent < 0):
            self.refused += 1
            raise Refused(f"'sent' is {sent!r:.40}; it must be the int count of summaries sent")
        book.done, book.sent = True, sent
        book.error = error[:MAX_ERROR_CHARS] if error else None
        return {"merged": book.merged, "missing": book.missing()}

    def connection_gone(self, client: bytes, now: float) -> None:
        """The wire server forgot ``client`` (closed, or silent for 3 heartbeat intervals)."""
        for book in self._workers.values():
            if book.client == client:
                book.connected = False

    # -- reading -------------------------------------------------------------------------------
    def fold(self) -> None:
        """Merge pending summaries into the per-arm totals."""
        for arm, summaries in self._pending.items():
            self._arms.setdefault(arm, Summary()).merge_all(summaries)
        self._pending.clear()
        self._pending_count = 0

    def arms(self) -> dict[str, Summary]:
        """The merged summary per arm (the ledger's own: copy before keeping)."""
        self.fold()
        return dict(self._arms)

    def workers(self, now: float) -> dict[str, dict[str, Any]]:
        return {name: book.view(now) for name, book in sorted(self._workers.items())}

    def done_count(self) -> int:
        return sum(book.done for book in self._workers.values())

    # -- helpers -------------------------------------------------------------------------------
    def _book(self, worker: str, client: bytes, now: float) -> WorkerBook:
        book = self._workers.get(worker)
        if book is None:
            if len(self._workers) >= self.max_workers:
                raise Refused(
                    f"worker {worker!r} is one too many: this aggregator keeps {self.max_workers} "
                    "workers; start a new evaluation or pass Aggregator(max_workers=...)"
                )
            book = self._workers[worker] = WorkerBook(client)
        elif book.client != client:
            book.last_refusal = "a message naming this worker came from another connection"
            raise Refused(
                f"worker {worker!r} already streams from another connection; give every worker "
                "its own --worker-id (a restarted worker needs a new one)"
            )
        if book.done:
            raise Refused(f"worker {worker!r} already said done; a new run needs a new worker id")
        book.connected = True
        book.last_seen = now
        return book

    def _refuse(self, book: WorkerBook, reason: str) -> str:
        book.refused += 1
        book.last_refusal = reason[:MAX_ERROR_CHARS]
        self.refused += 1
        raise Refused(reason)


def _name(header: Any, key: str) -> str:
    value = header.get(key) if isinstance(header, dict) else None
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise Refused(
            f"{key!r} is {value!r:.60}; it must be a non-empty str of at most "
            f"{MAX_NAME_CHARS} characters"
        )
    return value
