"""1 GiB all-reduce over 1,024 simulated chips: wall time and error vs the closed form.

The closed form is the alpha-beta(-gamma) formula for the algorithm, computed in the same run
from the topology's bottleneck hop (kpt.sim.closed_form); ratio = simulated / closed form.
"""

from __future__ import annotations

import time

from kpt.sim import Simulator

GIB = 1 << 30
CASES = [
    ("switch", 1, "ring"),
    ("switch", 1, "tree"),
    ("switch", 128, "hierarchical"),
    ("ring", 1, "ring"),
]


def main() -> None:
    print("1 GiB all-reduce, 1,024 x h100-sxm")
    header = f"{'topology':<14}{'algorithm':<14}{'simulated ms':>14}{'closed form ms':>16}"
    print(header + f"{'ratio':>10}{'wall s':>9}")
    for topology, nodes, algorithm in CASES:
        sim = Simulator("h100-sxm", devices=1024, topology=topology, nodes=nodes, trace=False)
        start = time.perf_counter()
        result = sim.collective("all_reduce", GIB, algorithm=algorithm)
        duration = result.duration  # reading it runs the collective's simpy process
        wall = time.perf_counter() - start
        name = topology if nodes == 1 else f"{nodes} nodes x 8"
        print(
            f"{name:<14}{algorithm:<14}{duration * 1e3:>14.3f}"
            f"{result.predicted * 1e3:>16.3f}{duration / result.predicted:>10.4f}"
            f"{wall:>9.2f}"
        )


if __name__ == "__main__":
    main()
