"""Host-side routes: gloo for cpu tensors, and the staged route of mixed groups.

A mixed group (ranks on different device kinds, or kpt_sim ranks on different daemons) stages
every collective through the host: device -> host copy, gloo across the ranks' hosts, host ->
device copy. cpu tensors skip the copies. gloo has no AVG: it runs SUM and divides.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import AllgatherOptions  # not re-exported by torch.distributed

from kpt.collectives._errors import CollectiveError
from kpt.collectives._work import finished, wait_library

GLOO_STORE_PREFIX = "kpt-gloo/"


def make_gloo(store: Any, rank: int, world: int, timeout: datetime.timedelta) -> Any:
    """gloo over the ranks' hosts (loopback here), on its own part of the group's store."""
    prefixed = dist.PrefixStore(GLOO_STORE_PREFIX, store)
    return dist.ProcessGroupGloo(prefixed, rank, world, timeout)


class HostRoute:
    """Runs collectives with gloo on host copies (cpu tensors are their own copies).

    `gloo` is named for the usual library; NativeRoute puts nccl or xccl in its place."""

    name = "gloo"

    def __init__(self, gloo: Any, world: int) -> None:
        self.gloo = gloo
        self.world = world

    def close(self) -> None:
        """Drop the library's group now, at destroy_process_group. ProcessGroupGloo's
        destructor joins its worker threads; run later, at interpreter exit, a thread still
        holding a Work's tensors aborts the process ("terminate called without an active
        exception", pytorch/pytorch#179291): the likely cause of the aborts a 2-rank FSDP2 test
        on cpu ranks hit, twice, under load."""
        library, self.gloo = self.gloo, None
        if library is not None:
            library.shutdown()  # nccl: its communicators end (gloo: nothing to do)

    @staticmethod
    def host(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type == "cpu":
            return tensor
        return tensor.detach().to("cpu").contiguous()

    def _done(self, work: Any, copies: list[tuple[torch.Tensor, torch.Tensor]],
              after: Callable[[], None] | None, result: Any) -> dist.Work:  # fmt: skip
        """The library's own Work when nothing is left to do; else wait, run `after` on the
        host copies and copy them back to the devices."""
        if not copies and after is None:
            return work  # the library's Work, still asynchronous, its errors its own
        wait_library(work, f"{self.name} collective")
        with torch.no_grad():
            if after is not None:
                after()
            for device_tensor, host_tensor in copies:
                if device_tensor is not host_tensor:
                    device_tensor.copy_(host_tensor)
        return finished(result)

    def all_reduce(self, tensor: torch.Tensor, op: Any) -> dist.Work:
        host = self.host(tensor)
        opts = dist.AllreduceOptions()
        average = op == dist.ReduceOp.AVG
        opts.reduceOp = dist.ReduceOp.SUM if average else op
        work = self.gloo.allreduce([host], opts)
        after = (lambda: divide(host, self.world)) if average else None
        copies = [] if host is tensor else [(tensor, host)]
        return self._done(work, copies, after, [tensor])

    def all_gather(self, output: torch.Tensor, input: torch.Tensor) -> dist.Work:
        host_out, host_in = self.host(output), self.host(input)
        parts = list(host_out.view(self.world, -1).unbind(0))
        work = self.gloo.allgather([parts], [host_in.reshape(-1)])
        copies = [] if host_out is output else [(output, host_out)]
        return self._done(work, copies, None, [output])

    def reduce_scatter(self, output: torch.Tensor, input: torch.Tensor, op: Any) -> dist.Work:
        # gloo has no reduce_scatter: all-reduce the whole input, keep this rank's chunk.
        host_in = self.host(input).clone()
        average = op == dist.ReduceOp.AVG
        opts = dist.AllreduceOptions()
        opts.reduceOp = dist.ReduceOp.SUM if average else op
        wait_library(self.gloo.allreduce([host_in], opts), "gloo reduce_scatter")
        if average:
            divide(host_in, self.world)
        mine = host_in.reshape(self.world, -1)[self.gloo.rank()].reshape(output.shape)
        with torch.no_grad():
            output.copy_(mine)
        return finished([output])

    def broadcast(self, tensor: torch.Tensor, root: int) -> dist.Work:
        host = self.host(tensor)
        opts = dist.BroadcastOptions()
        opts.rootRank = root
        work = self.gloo.broadcast([host], opts)
        return self._done(work, [] if host is tensor else [(tensor, host)], None, [tensor])

    def all_to_all(self, output: torch.Tensor, input: torch.Tensor) -> dist.Work:
        host_out, host_in = self.host(output), self.host(input)
        work = self.gloo.alltoall_base(host_out, host_in, [], [], dist.AllToAllOptions())
        return self._done(work, [] if host_out is output else [(output, host_out)], None,
                          [output])  # fmt: skip

    def p2p(self, tensor: torch.Tensor, peer: int, tag: int, sending: bool) -> dist.Work:
        host = self.host(tensor)
        if sending:
            return self._done(self.gloo.send([host], peer, tag), [], None, [tensor])
        work = self.gloo.recv([host], peer, tag)
        return self._done(work, [] if host is tensor else [(tensor, host)], None, [tensor])

    def barrier(self) -> dist.Work:
        return self.gloo.barrier(dist.BarrierOptions())


class NativeRoute(HostRoute):
    """A vendor's own library over same-kind ranks (nccl for cuda, xccl for xpu): no staging,
    and the library's own AVG, reduce_scatter and flat all_gather."""

    name = "native"

    @staticmethod
    def host(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def all_reduce(self, tensor: torch.Tensor, op: Any) -> dist.Work:
        opts = dist.AllreduceOptions()
        opts.reduceOp = op
        return self.gloo.allreduce([tensor], opts)

    def all_gather(self, output: torch.Tensor, input: torch.Tensor) -> dist.Work:
        return self.gloo._allgather_base(output, input, AllgatherOptions())

    def reduce_scatter(self, output: torch.Tensor, input: torch.Tensor, op: Any) -> dist.Work:
        opts = dist.ReduceScatterOptions()
        opts.reduceOp = op
        return self.gloo._reduce_scatter_base(output, input, opts)


def make_native(kind: str, store: Any, rank: int, world: int,
                timeout: datetime.timedelta) -> NativeRoute:  # fmt: skip
    """nccl (cuda, also ROCm builds) or xccl (xpu) over the group's store."""
    prefixed = dist.PrefixStore(f"kpt-{kind}/", store)
    if kind == "cuda" and dist.is_nccl_available():
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return NativeRoute(dist.ProcessGroupNCCL(prefixed, rank, world, options), world)
    if kind == "xpu" and getattr(dist, "is_xccl_available", lambda: False)():
        return NativeRoute(dist.ProcessGroupXCCL(prefixed, rank, world), world)
    raise CollectiveError(
        f"no native collective library for {kind} tensors in this torch build "
        f"(torch {torch.__version__}); install a build with nccl (cuda) or xccl (xpu)"
    )


def divide(tensor: torch.Tensor, world: int) -> None:
    """AVG from SUM: libraries without AVG (gloo) sum, then this divides."""
    if tensor.is_floating_point() or tensor.is_complex():
        tensor.div_(world)
    else:
        tensor.floor_divide_(world)
