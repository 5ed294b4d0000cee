"""Derive the shipped `h200` profile again from `h100-sxm`, keeping its `[host]` tables.

After h100-sxm changes (a refit, a new class), h200 must be what `kpt-sim profile derive`
writes from it with the H200's datasheet (tests/test_derive_and_uncertainty.py checks), plus
the `[host]` tables fitted on the H200's own host (host_model_fit.py), which a datasheet
cannot give. This applies the derive output's changes to the shipped file, so the host tables
stay where they are, and prints what changed.

    python simulator/calibration/derive_h200.py
"""

from __future__ import annotations

import difflib
import re
from importlib import resources
from pathlib import Path

from kpt.sim import Datasheet, derive_profile

H200_SHEET = Datasheet(hbm_bandwidth_gbps=4800, hbm_capacity_gib=141, model="H200 SXM 141GB")
HOST_TABLES = re.compile(r"(?ms)^\[host(\.[a-z_]+)?\].*?\n\n")


def main() -> None:
    path = Path(str(resources.files("kpt.sim") / "profiles" / "h200.toml"))
    shipped = path.read_text()
    chip = HOST_TABLES.sub("", shipped).splitlines(keepends=True)
    derived = derive_profile("h100-sxm", H200_SHEET).splitlines(keepends=True)
    out, changes = shipped, 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=chip, b=derived).get_opcodes():
        if tag == "equal":
            continue
        before, after = "".join(chip[i1:i2]), "".join(derived[j1:j2])
        if tag == "insert":  # anchored on the line before it, which the chip part keeps
            before = "".join(chip[max(0, i1 - 3) : i1])
            after = before + after
        if out.count(before) != 1:
            raise SystemExit(f"cannot place this change unambiguously:\n{before}-> {after}")
        out = out.replace(before, after)
        changes += 1
        print(f"{tag}:\n{''.join(chip[i1:i2])}->\n{''.join(derived[j1:j2])}")
    path.write_text(out)
    print(f"{path}: {changes} change(s)")


if __name__ == "__main__":
    main()
