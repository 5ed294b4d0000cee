"""What kpt.hal sees of kpt_sim: discovery, capabilities and health, found without using it.

Importing this package (kpt.hal does, through the ``kpt.adapters`` entry point ``sim``) leaves
torch as it was: no PrivateUse1 rename, no ``torch.accelerator`` change, no daemon started.
The device is registered when it is first used: ``import kpt.adapters.sim``, or reading the
``torch_device`` of a kpt_sim device that kpt.hal listed or selected
(``SimAdapter.register_device``).
"""

from kpt.adapters.sim_hal._adapter import SimAdapter, peak_flops

__all__ = ["SimAdapter", "peak_flops"]
