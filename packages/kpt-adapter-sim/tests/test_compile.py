"""torch.compile on kpt_sim tensors runs the frame eagerly with a warning, never an internal
Dynamo error; fullgraph=True is refused with a message saying why and what to do."""

import pytest
import torch

pytestmark = pytest.mark.timeout(240)


def _step(x, w):
    return torch.nn.functional.gelu(x @ w).sum()


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compile_runs_kpt_sim_frames_eagerly_with_right_values(sim, backend):
    torch._dynamo.reset()
    x, w = torch.randn(4, 8), torch.randn(8, 3)
    compiled = torch.compile(_step, backend=backend)
    with pytest.warns(UserWarning, match="torch.compile cannot trace kpt_sim tensors"):
        got = compiled(x.to("kpt_sim"), w.to("kpt_sim"))
    torch.testing.assert_close(got.cpu(), _step(x, w))


def test_fullgraph_is_refused_with_the_reason(sim):
    torch._dynamo.reset()
    x = torch.randn(4, 8, device="kpt_sim")
    compiled = torch.compile(_step, backend="eager", fullgraph=True)
    with pytest.raises(Exception, match="drop fullgraph=True"), pytest.warns(UserWarning):
        compiled(x, torch.randn(8, 3, device="kpt_sim"))
