"""kpt.abtest: statistics for A/B experiments, sequential tests and benchmark regressions."""

from kpt.abtest._assign import Assigner, assign
from kpt.abtest._baselines import BaselineStore
from kpt.abtest._bench import DeviceBenchmark, DeviceResult, benchmark_devices, device_timer
from kpt.abtest._bootstrap import BootstrapResult, bootstrap
from kpt.abtest._changepoint import ChangePoint, detect_changes
from kpt.abtest._classical import mann_whitney, permutation_pvalue, two_proportion
from kpt.abtest._compare import compare
from kpt.abtest._cuped import cuped
from kpt.abtest._distributed import Aggregator, Reporter, evaluate_distributed, launch_workers
from kpt.abtest._equivalence import MarginTest, equivalence, non_inferiority
from kpt.abtest._experiment import Experiment, ExperimentResult, TrialDone
from kpt.abtest._matrix import (
    MatrixResult,
    RegressionReport,
    benchmark_matrix,
    compare_to_baseline,
)
from kpt.abtest._multiple import benjamini_hochberg, holm
from kpt.abtest._power import minimum_detectable_effect, power_mean, power_proportion, sample_size
from kpt.abtest._report import load_report, to_json, to_markdown, write_report
from kpt.abtest._result import Comparison
from kpt.abtest._sequential import SequentialTest
from kpt.abtest._sketch import QuantileSketch, rank_error_bound
from kpt.abtest._srm import SRMResult, srm_check
from kpt.abtest._summary import Summary
from kpt.abtest._tables import compare_groups, split_groups
from kpt.abtest._version import __version__

__all__ = [
    "Aggregator",
    "Assigner",
    "BaselineStore",
    "BootstrapResult",
    "ChangePoint",
    "Comparison",
    "DeviceBenchmark",
    "DeviceResult",
    "Experiment",
    "ExperimentResult",
    "MarginTest",
    "MatrixResult",
    "QuantileSketch",
    "RegressionReport",
    "Reporter",
    "SRMResult",
    "SequentialTest",
    "Summary",
    "TrialDone",
    "__version__",
    "assign",
    "benchmark_devices",
    "benchmark_matrix",
    "benjamini_hochberg",
    "bootstrap",
    "compare",
    "compare_groups",
    "compare_to_baseline",
    "cuped",
    "detect_changes",
    "device_timer",
    "equivalence",
    "evaluate_distributed",
    "holm",
    "launch_workers",
    "load_report",
    "mann_whitney",
    "minimum_detectable_effect",
    "non_inferiority",
    "permutation_pvalue",
    "power_mean",
    "power_proportion",
    "rank_error_bound",
    "sample_size",
    "split_groups",
    "srm_check",
    "to_json",
    "to_markdown",
    "two_proportion",
    "write_report",
]
