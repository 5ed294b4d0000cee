"""KptProcessGroup: the torch.distributed backend "kpt" (one object per group and process).

torch calls its methods with this rank's tensors; each collective goes down the route the group
agreed on (_routes). List-shaped calls (all_gather into a list, reduce_scatter from a list,
all_to_all of lists) run as their flat forms on a staging tensor and copy out when done.
"""

from __future__ import annotations

import datetime
import os
import uuid
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from kpt.collectives._errors import CollectiveError
from kpt.collectives._host_route import HostRoute, make_gloo
from kpt.collectives._routes import RouteBook
from kpt.collectives._sim_route import SimRoute, premul_factor, sim_reduce_op
from kpt.collectives._work import finished

BACKEND_NAME = "kpt"
DEVICES = ["cpu", "cuda", "xpu", "kpt_sim"]
_AVG = dist.ReduceOp.AVG
_PREMUL_SUM = dist.ReduceOp.PREMUL_SUM


class KptProcessGroup(dist.ProcessGroup):
    """One rank's view of a group; made by torch through Backend.register_backend."""

    def __init__(self, store: Any, rank: int, world: int, timeout: datetime.timedelta) -> None:
        super().__init__(rank, world)
        store = _this_attempts_keys(store)
        self._rank, self._world = rank, world
        self._group_name = self._group_desc = ""
        self.group_id = _group_id(store, rank)
        self._host = HostRoute(make_gloo(store, rank, world, timeout), world)
        self.routes = RouteBook(store, rank, world, timeout, self.group_id, self._host)

    def getBackendName(self) -> str:
        return BACKEND_NAME

    # torch keeps a group's name on its C++ backends, and a Python group has none: keep it here
    # (DeviceMesh and FSDP2 look groups up by name).
    def _set_group_name(self, name: str) -> None:
        self._group_name = name

    @property
    def group_name(self) -> str:
        return self._group_name

    def _set_group_desc(self, desc: str) -> None:
        self._group_desc = desc

    @property
    def group_desc(self) -> str:
        return self._group_desc

    # torch asks a new group for its backend on the default group's device (init_process_group
    # with device_id) to split it; a Python group is its own backend and does not split.
    def _get_backend(self, device: Any) -> KptProcessGroup:
        return self

    supports_splitting = False

    def __repr__(self) -> str:
        return f"KptProcessGroup({self.group_id}, rank {self._rank} of {self._world}, " \
               f"{self.routes.describe()})"  # fmt: skip

    def shutdown(self) -> None:
        self.routes.close()

    # -- all_reduce and friends -----------------------------------------------------------------
    def allreduce(self, tensors: list[torch.Tensor], opts: Any = None) -> dist.Work:
        op = dist.ReduceOp.SUM if opts is None else opts.reduceOp
        if (self.routes.kinds is not None and tensors[0].device.type == "cpu" and op != _AVG
                and op != _PREMUL_SUM and not self.routes.may_split):  # fmt: skip
            # gloo's own Work, untouched: no Python Work object, copy or thread per call
            return self._host.gloo.allreduce(tensors, opts or dist.AllreduceOptions())
        if len(tensors) == 1:  # dist.all_reduce's call: no generator, no list of Works
            return self._all_reduce(tensors[0], op)
        return _last(self._all_reduce(t, op) for t in tensors)

    def allreduce_coalesced(self, tensors: list[torch.Tensor], opts: Any = None) -> dist.Work:
        return self.allreduce(tensors, opts)

    def _all_reduce(self, tensor: torch.Tensor, op: Any) -> dist.Work:
        route = self.routes.route(tensor)
        hierarchy = self.routes.hierarchy(tensor)
        if hierarchy is None and isinstance(route, SimRoute):
            flat, back = _contiguous(tensor)
            name, factor = sim_reduce_op(op)
            return route.run("all_reduce", flat, None, [tensor], op=name, factor=factor,
                             finish=back)  # fmt: skip
        factor = premul_factor(op)
        if factor is not None:  # gloo and the staged routes have no PREMUL_SUM: scale, then SUM
            with torch.no_grad():
                tensor.mul_(factor)
            op = dist.ReduceOp.SUM
        if hierarchy is not None:
            return hierarchy.all_reduce(tensor, op)
        return route.all_reduce(tensor, op)

    def reduce(self, tensors: list[torch.Tensor], opts: Any) -> dist.Work:
        (tensor,) = tensors
        scratch = tensor.detach().clone()
        work = self._all_reduce(scratch, opts.reduceOp)
        work.wait()
        if self._rank == opts.rootRank:
            with torch.no_grad():
                tensor.copy_(scratch)
        return finished([tensor])

    # -- all_gather -----------------------------------------------------------------------------
    def all_gather_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None):
        route = self.routes.route(input)
        if not isinstance(route, SimRoute):
            return route.all_gather(output, input)
        flat_out, back = _contiguous(output)
        flat_in, _ = _contiguous(input)
        return route.run("all_gather", flat_in, flat_out, [output], finish=back)

    _allgather_base = all_gather_single

    def allgather(self, outputs: list[list[torch.Tensor]], inputs: list[torch.Tensor],
                  opts: Any = None) -> dist.Work:  # fmt: skip
        (into,), (input,) = outputs, inputs
        _refuse_uneven("all_gather", [t.numel() for t in into], "all_gather_uneven")
        flat = input.new_empty((self._world, *input.shape))
        work = self.all_gather_single(flat, input)
        return _then(work, lambda: _copy_each(into, flat.unbind(0)), outputs)

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts=None) -> dist.Work:
        return _last(self.all_gather_single(o, i) for o, i in zip(outputs, inputs))

    def gather(self, outputs: list[list[torch.Tensor]], inputs: list[torch.Tensor], opts: Any):
        (input,) = inputs
        flat = input.new_empty((self._world, *input.shape))
        self.all_gather_single(flat, input).wait()
        if self._rank == opts.rootRank:
            _copy_each(outputs[0], flat.unbind(0))
        return finished(outputs)

    # -- reduce_scatter -------------------------------------------------------------------------
    def reduce_scatter_single(self, output: torch.Tensor, input: torch.Tensor, opts: Any = None):
        op = dist.ReduceOp.SUM if opts is None else opts.reduceOp
        route = self.routes.route(input)
        if not isinstance(route, SimRoute):
            factor = premul_factor(op)
            if factor is not None:  # no PREMUL_SUM there: a scaled copy of the input, then SUM
                input, op = input * factor, dist.ReduceOp.SUM
            return route.reduce_scatter(output, input, op)
        flat_out, back = _contiguous(output)
        flat_in, _ = _contiguous(input)
        name, factor = sim_reduce_op(op)
        return route.run("reduce_scatter", flat_in, flat_out, [output], op=name, factor=factor,
                         finish=back)  # fmt: skip

    _reduce_scatter_base = reduce_scatter_single

    def reduce_scatter(self, outputs: list[torch.Tensor], inputs: list[list[torch.Tensor]],
                       opts: Any = None) -> dist.Work:  # fmt: skip
        (output,), (parts,) = outputs, inputs
        _refuse_uneven("reduce_scatter", [p.numel() for p in parts], "reduce_scatter_uneven")
        flat = torch.stack([p.reshape(output.shape) for p in parts])
        return self.reduce_scatter_single(output, flat, opts)

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts=None) -> dist.Work:
        return _last(self.reduce_scatter_single(o, i, opts) for o, i in zip(outputs, inputs))

    # -- broadcast, scatter ---------------------------------------------------------------------
    def broadcast(self, tensors: list[torch.Tensor], opts: Any) -> dist.Work:
        return _last(self._broadcast(t, opts.rootRank) for t in tensors)

    def _broadcast(self, tensor: torch.Tensor, root: int) -> dist.Work:
        route = self.routes.route(tensor)
        if not isinstance(route, SimRoute):
            return route.broadcast(tensor, root)
        flat, back = _contiguous(tensor)
        return route.run("broadcast", flat, None, [tensor], root=root, finish=back)

    def scatter(self, outputs: list[torch.Tensor], inputs: list[list[torch.Tensor]], opts: Any):
        (output,) = outputs
        if self._rank == opts.rootRank:
            flat = torch.stack([p.reshape(output.shape) for p in inputs[0]])
        else:
            flat = output.new_empty((self._world, *output.shape))
        self._broadcast(flat, opts.rootRank).wait()
        with torch.no_grad():
            output.copy_(flat[self._rank])
        return finished(outputs)

    # -- all_to_all -----------------------------------------------------------------------------
    def all_to_all_single(self, output: torch.Tensor, input: torch.Tensor,
                          output_splits: list[int], input_splits: list[int],
                          opts: Any = None) -> dist.Work:  # fmt: skip
        route = self.routes.route(input)
        uneven = _uneven(output_splits) or _uneven(input_splits)
        if uneven:  # the daemon's all_to_all moves equal chunks: uneven splits go by the host
            host_out, host_in = HostRoute.host(output), HostRoute.host(input)
            self._host.gloo.alltoall_base(host_out, host_in, output_splits, input_splits,
                                          dist.AllToAllOptions()).wait()  # fmt: skip
            with torch.no_grad():
                if host_out is not output:
                    output.copy_(host_out)
            return finished([output])
        if not isinstance(route, SimRoute):
            return route.all_to_all(output, input)
        flat_out, back = _contiguous(output)
        flat_in, _ = _contiguous(input)
        return route.run("all_to_all", flat_in, flat_out, [output], finish=back)

    alltoall_base = all_to_all_single

    def alltoall(self, outputs: list[torch.Tensor], inputs: list[torch.Tensor],
                 opts: Any = None) -> dist.Work:  # fmt: skip
        if len({t.numel() for t in (*outputs, *inputs)}) > 1:
            raise CollectiveError(
                f"all_to_all with tensors of sizes {[t.numel() for t in inputs]}: the kpt "
                "backend needs equal sizes here; use all_to_all_single with split sizes"
            )
        flat_in = torch.cat([t.reshape(-1) for t in inputs])
        flat_out = torch.empty_like(flat_in)
        work = self.all_to_all_single(flat_out, flat_in, [], [])
        chunks = flat_out.view(self._world, -1).unbind(0)
        return _then(work, lambda: _copy_each(outputs, chunks), outputs)

    # -- point to point, barrier ----------------------------------------------------------------
    def send(self, tensors: list[torch.Tensor], dst: int, tag: int) -> dist.Work:
        (tensor,) = tensors
        route = self.routes.route(tensor)
        return route.p2p(_contiguous(tensor)[0], dst, tag, sending=True)

    def recv(self, tensors: list[torch.Tensor], src: int, tag: int) -> dist.Work:
        (tensor,) = tensors
        route = self.routes.route(tensor)
        if isinstance(route, SimRoute) and not tensor.is_contiguous():
            raise CollectiveError(
                "recv into a non-contiguous kpt_sim tensor: pass a contiguous one"
            )
        return route.p2p(tensor, src, tag, sending=False)

    def barrier(self, opts: Any = None) -> dist.Work:
        self.routes.settle()  # as NCCL's barrier synchronizes the device first
        return self._host.barrier()


def _this_attempts_keys(store: Any) -> Any:
    """The group's store, its keys apart from an earlier attempt's under torchrun restarts.

    torchrun (torch 2.13) keeps one TCPStore for every attempt of a job: a restarted rank would
    read the keys of the attempt before (the dead ranks' gloo addresses, the old group id) and
    never connect. TORCHELASTIC_RESTART_COUNT names the attempt."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    return store if attempt is None else dist.PrefixStore(f"kpt-attempt-{attempt}/", store)


def _group_id(store: Any, rank: int) -> str:
    """A name the ranks share and no other group has: rank 0 makes it, the others read it."""
    if rank == 0:
        store.set("kpt-group-id", uuid.uuid4().hex[:16])
    return store.get("kpt-group-id").decode()


def _contiguous(tensor: torch.Tensor) -> tuple[torch.Tensor, Callable[[], None] | None]:
    """The tensor itself, or a contiguous copy and the step that copies results back."""
    if tensor.is_contiguous():
        return tensor, None
    copy = tensor.detach().contiguous()
    return copy, lambda: tensor.copy_(copy)


def _copy_each(targets: list[torch.Tensor], sources: Any) -> None:
    with torch.no_grad():
        for target, source in zip(targets, sources):
            target.copy_(source.reshape(target.shape))


def _then(work: dist.Work, step: Callable[[], None], result: Any) -> dist.Work:
    """Wait for `work`, run `step` (copy out of staging), return a finished Work."""
    work.wait()
    step()
    return finished(result)


def _last(works: Any) -> dist.Work:
    """torch's coalesced convention: one Work for many tensors; earlier ones are waited."""
    works = list(works)
    for work in works[:-1]:
        work.wait()
    return works[-1] if works else finished([])


def _refuse_uneven(kind: str, sizes: list[int], instead: str) -> None:
    """The flat collectives under the list forms move equal parts (the daemon's and gloo's)."""
    if len(set(sizes)) > 1:
        raise CollectiveError(
            f"{kind} with a list of tensors of sizes {sizes}: the kpt backend needs equal sizes "
            f"in the list form; for uneven shards use kpt.collectives.{instead} (pads to the "
            "largest, then trims)"
        )


def _uneven(splits: list[int] | None) -> bool:
    return bool(splits) and len(set(splits)) > 1
