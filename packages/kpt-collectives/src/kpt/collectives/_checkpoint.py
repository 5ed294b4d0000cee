"""Checkpoints a restarted job resumes from, with no lost or repeated step (torch's DCP).

`save_checkpoint(folder, steps_done, model, optimizer)` writes the model's and the optimizer's
state after `steps_done` steps to ``folder/step-<steps_done>`` with torch.distributed.checkpoint
(every rank writes its part; DDP, FSDP2 and plain modules alike). `load_latest_checkpoint` loads
the newest complete one into the model and optimizer and returns its `steps_done`: the index of
the next step to run. A checkpoint is complete once DCP wrote its ``.metadata`` (the
coordinator's last act, through a rename), so a save cut short by a crash is never loaded.
Rank 0 picks the checkpoint and tells the others, so every rank loads the same one.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

CHECKPOINT_PREFIX = "step-"
_COMPLETE_MARK = ".metadata"  # DCP's FileSystemWriter writes it last, by rename


def save_checkpoint(
    folder: str | os.PathLike, steps_done: int, model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> Path:  # fmt: skip
    """Save the state after `steps_done` optimizer steps (a collective: call it on every rank)."""
    if type(steps_done) is not int or steps_done < 0:
        raise ValueError(f"save_checkpoint: steps_done = {steps_done!r} must be an int >= 0")
    path = Path(folder) / f"{CHECKPOINT_PREFIX}{steps_done:08d}"
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state, "steps_done": torch.tensor(steps_done)}
    dcp.save(state, checkpoint_id=path)
    return path


def load_latest_checkpoint(
    folder: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> int:
    """Load the newest complete checkpoint in `folder` into `model` and `optimizer` and return
    its steps_done (0, with nothing loaded, when there is none). A collective: every rank."""
    newest = torch.tensor([latest_steps_done(folder) if _rank() == 0 else -1])
    if dist.is_initialized():
        dist.broadcast(newest, src=0)  # rank 0's listing decides: every rank loads the same one
    steps_done = int(newest[0])
    if steps_done < 0:
        return 0
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state, "steps_done": torch.tensor(-1)}
    dcp.load(state, checkpoint_id=Path(folder) / f"{CHECKPOINT_PREFIX}{steps_done:08d}")
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])  # fmt: skip
    if int(state["steps_done"]) != steps_done:
        raise RuntimeError(
            f"checkpoint {folder}/{CHECKPOINT_PREFIX}{steps_done:08d} holds steps_done = "
            f"{int(state['steps_done'])}: it was renamed or written by something else; "
            "remove it to resume from the one before"
        )
    return steps_done


def latest_steps_done(folder: str | os.PathLike) -> int:
    """steps_done of the newest complete checkpoint in `folder`, or -1 when there is none."""
    root = Path(folder)
    if not root.is_dir():
        return -1
    done = [
        int(p.name[len(CHECKPOINT_PREFIX) :])
        for p in root.iterdir()
        if p.name.startswith(CHECKPOINT_PREFIX)
        and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (p / _COMPLETE_MARK).is_file()
    ]
    return max(done, default=-1)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0
