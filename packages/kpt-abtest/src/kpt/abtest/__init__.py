"""kpt.abtest: statistics for A/B experiments, sequential tests and benchmark regressions."""

from kpt.abtest._bootstrap import BootstrapResult, bootstrap
from kpt.abtest._classical import mann_whitney, permutation_pvalue, two_proportion
from kpt.abtest._compare import compare
from kpt.abtest._cuped import cuped
from kpt.abtest._result import Comparison
from kpt.abtest._version import __version__

__all__ = [
    "BootstrapResult",
    "Comparison",
    "__version__",
    "bootstrap",
    "compare",
    "cuped",
    "mann_whitney",
    "permutation_pvalue",
    "two_proportion",
]
