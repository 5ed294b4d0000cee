"""A workload for ``kpt-abtest matrix``: a small random-weight MLP, one inference step.

    kpt-abtest matrix matrix_mlp:workload --devices cpu,kpt_sim:0 --dtypes float32,bfloat16 \\
        --batch-sizes 1,8,32 --save-baseline main     # then, in CI: ... --baseline main

(run from this folder, or put it on PYTHONPATH). Needs torch (the ``torch`` extra); kpt_sim
needs kpt-adapter-sim, and its times are simulated: cells on it are compared only with
simulated cells of the baseline.
"""

from __future__ import annotations

import torch


def workload(device: str, dtype: str, batch_size: int):
    """Build the model and input once per cell; the returned step is what gets timed."""
    if device.startswith("kpt_sim"):
        import kpt.adapters.sim  # noqa: F401 - registers the kpt_sim device

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"dtype {dtype!r} is not a torch dtype name, e.g. float32 or bfloat16")
    generator = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(512, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 512)
    )
    for parameter in model.parameters():
        parameter.data = torch.randn(parameter.shape, generator=generator) * 0.02
    model = model.to(device=device, dtype=torch_dtype).eval()
    x = torch.randn(batch_size, 512, generator=generator).to(device=device, dtype=torch_dtype)

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step
