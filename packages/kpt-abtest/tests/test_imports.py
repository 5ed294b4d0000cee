import subprocess
import sys

import kpt.abtest

# The statistics core's public names; the experiment modules add their own beside these.
STATISTICS = [
    "BootstrapResult", "ChangePoint", "Comparison", "MarginTest", "QuantileSketch", "SRMResult",
    "SequentialTest", "Summary", "__version__", "benjamini_hochberg", "bootstrap", "compare",
    "cuped", "detect_changes", "equivalence", "holm", "mann_whitney", "minimum_detectable_effect",
    "non_inferiority", "permutation_pvalue", "power_mean", "power_proportion", "rank_error_bound",
    "sample_size", "srm_check", "two_proportion",
]  # fmt: skip


def test_public_names_are_pinned():
    assert sorted(kpt.abtest.__all__) == kpt.abtest.__all__
    assert set(STATISTICS) <= set(kpt.abtest.__all__)
    for name in kpt.abtest.__all__:
        assert getattr(kpt.abtest, name) is not None


def test_import_stays_torch_free():
    code = "import sys, kpt.abtest; assert 'torch' not in sys.modules, 'kpt.abtest pulled torch'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
