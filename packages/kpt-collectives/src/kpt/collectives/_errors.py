"""Errors of the kpt backend: torch.distributed's own DistBackendError, typed further."""

from __future__ import annotations

import torch.distributed as dist


class CollectiveError(dist.DistBackendError):
    """A collective failed; the message names the group, the operation and the rank at fault."""


class CollectiveTimeoutError(CollectiveError, TimeoutError):
    """Some ranks never joined a collective in time (slow, hung or dead); they are named."""
