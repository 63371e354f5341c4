"""The recorded replications: their READMEs show what their CSVs hold."""

import subprocess
import sys

from conftest import REPO

FC2019 = REPO / "experiments" / "frankle_carbin_2019"


def test_frankle_carbin_readme_table_is_what_its_csv_says():
    out = subprocess.run(
        [sys.executable, str(FC2019 / "compare.py")], capture_output=True, text=True, check=True
    ).stdout
    table = [line for line in out.splitlines() if line.count("|") == 10]  # the per-level table, header first
    rows = [line for line in table if line.split("|")[1].strip().isdigit()]
    assert len(rows) == 21  # levels 0-20
    readme = (FC2019 / "README.md").read_text()
    missing = [line for line in table if line not in readme.splitlines()]
    assert not missing, missing
    for figure in ("accuracy_vs_sparsity.png", "early_stopping.png"):
        assert f"]({figure})" in readme and (FC2019 / figure).stat().st_size > 0
