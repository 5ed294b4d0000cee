"""Helpers for the fleet tests: start `kpt-serve` as a real process, stop it leaving nothing;
the specs of a fleet of simulated chips."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from conftest import VOCAB

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def add_tokenizer(model_dir, with_chat_template=True):
    """A word-level tokenizer.json over VOCAB ids (0 <s>, 1 </s>, 2 [UNK]) and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<s>", "</s>", "[UNK]", "user", "assistant", ":", "system"]
    words += [f"w{i}" for i in range(VOCAB - len(words))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(model_dir / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": "</s>"}
    if with_chat_template:
        config["chat_template"] = CHAT_TEMPLATE
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    return model_dir


def start_server(args, timeout=240.0):
    """Run `kpt-serve ARGS --port 0`; returns (process, base url) once it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kpt.serve._cli", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:  # drains stdout for the server's whole life, so it never blocks
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"kpt-serve {args} exited with {process.returncode}"
                    ) from None
                continue
            if line.startswith("kpt-serve: listening on "):
                return process, line.split()[-1]
        raise TimeoutError(f"kpt-serve {args} did not listen within {timeout}s")
    except BaseException:
        stop_server(process, [])
        raise


def stop_server(process, worker_pids, timeout=30.0):
    """SIGTERM the server; it must exit and take every worker process with it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
            raise AssertionError("kpt-serve did not exit within 30s of SIGTERM") from None
    assert_gone(worker_pids)


def assert_gone(pids, timeout=15.0):
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        time.sleep(0.1)
    assert not alive, f"worker processes {alive} outlived the fleet"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours still answers kill 0; the launcher reaps its own, others' we ask.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def sim_worker_specs(model_dir, profiles, step_clock: str, **fields) -> list:
    """One kpt_sim worker per chip profile serving model "m", one torch thread each."""
    from kpt.serve.fleet import WorkerSpec  # the http extra: only the fleet tests import it

    return [
        WorkerSpec(model="m", model_dir=str(model_dir), device="kpt_sim:0", profile=profile,
                   step_clock=step_clock, threads=1, **fields)
        for profile in profiles
    ]  # fmt: skip
