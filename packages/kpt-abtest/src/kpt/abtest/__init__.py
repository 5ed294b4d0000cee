"""kpt.abtest: statistics for A/B experiments, sequential tests and benchmark regressions."""

from kpt.abtest._assign import Assigner, assign
from kpt.abtest._bench import DeviceBenchmark, DeviceResult, benchmark_devices
from kpt.abtest._bootstrap import BootstrapResult, bootstrap
from kpt.abtest._classical import mann_whitney, permutation_pvalue, two_proportion
from kpt.abtest._compare import compare
from kpt.abtest._cuped import cuped
from kpt.abtest._experiment import Experiment, ExperimentResult
from kpt.abtest._report import load_report, to_json, to_markdown, write_report
from kpt.abtest._result import Comparison
from kpt.abtest._version import __version__

__all__ = [
    "Assigner",
    "BootstrapResult",
    "Comparison",
    "DeviceBenchmark",
    "DeviceResult",
    "Experiment",
    "ExperimentResult",
    "__version__",
    "assign",
    "benchmark_devices",
    "bootstrap",
    "compare",
    "cuped",
    "load_report",
    "mann_whitney",
    "permutation_pvalue",
    "to_json",
    "to_markdown",
    "two_proportion",
    "write_report",
]
