import torch.distributed as dist

import kpt.collectives


def test_public_names_are_pinned():
    assert sorted(kpt.collectives.__all__) == kpt.collectives.__all__
    assert kpt.collectives.__all__ == [
        "BACKEND_NAME", "CollectiveError", "CollectiveTimeoutError", "DdpChoice",
        "KptProcessGroup", "LinkCost", "Plan", "Step", "__version__", "all_gather_uneven",
        "batch_weighted_hook", "device_rates", "format_plans", "init_device_mesh",
        "load_latest_checkpoint", "plans", "reduce_scatter_uneven", "save_checkpoint",
        "shard_sizes", "split_batch", "tune_ddp",
    ]  # fmt: skip


def test_importing_registers_the_kpt_backend_for_every_device():
    assert "kpt" in dist.Backend.backend_list
    assert dist.Backend.backend_capability["kpt"] == ["cpu", "cuda", "xpu", "kpt_sim"]
