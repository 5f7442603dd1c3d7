import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigrid.cli import app

runner = CliRunner()
EASY = "What is the capital of France?\nA. Paris\nB. Rome\nC. Oslo\nD. Bern\nAnswer:"
HARD = ("Let G be a finite group of order 2p with p prime. Prove the number of Sylow p-subgroups and compute "
        "x^5 + 3x^3 + 2x in Z_5[x] = 0; integrate sin(x)^2 / (1 + cos(x)) from 0 to pi. {} ")


def _write(path: Path, n: int = 40) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "prompt", "small_model_correct", "large_model_correct", "contaminated"])
        for i in range(n):
            hard = i % 2 == 1
            w.writerow(["algebra" if hard else "geography", (HARD if hard else EASY).format(i) + f" #{i}",
                        int(not hard or i % 3 == 0), 1, 0])
    return path


def test_models_eval_prints_every_router_and_the_gap_figures(tmp_path):
    # the SW-ranking baseline's neighbours from a file of the same shape, so the test does not depend on
    # ../shared/data/model-routing being next to the checkout (the default reference)
    ref = _write(tmp_path / "reference.csv", 200)
    r = runner.invoke(app, ["models", "eval", "--data", str(_write(tmp_path / "slice.csv")),
                            "--reference", str(ref), "--plot", str(tmp_path / "curve.png")])
    assert r.exit_code == 0, r.output
    for name in ("aigrid", "random mix", "sw-ranking", "oracle", "always-small", "always-large", "APGR",
                 "large calls for 50% of gap", "ms per prompt"):
        assert name in r.output
    assert "small = small_model_correct, large = large_model_correct" in r.output
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_models_eval_on_a_real_slice_when_the_shared_data_is_here(tmp_path):
    src = Path(__file__).resolve().parents[3] / "shared" / "data" / "model-routing" / "gsm8k_mixtral_vs_gpt4.csv"
    if not src.exists():
        src = Path("/work/shared/data/model-routing/gsm8k_mixtral_vs_gpt4.csv")
    if not src.exists():
        import pytest

        pytest.skip("../shared/data/model-routing is not on this machine")
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    head = list(csv.reader(lines[:1]))[0]
    rows = list(csv.reader(src.open(newline="", encoding="utf-8")))[1:121]
    sliced = tmp_path / "gsm8k_slice.csv"
    with sliced.open("w", newline="") as f:
        csv.writer(f).writerows([head] + rows)
    r = runner.invoke(app, ["models", "eval", "--data", str(sliced), "--no-baseline"])
    assert r.exit_code == 0, r.output
    assert "120 prompts" in r.output and "mixtral_8x7b_instruct_correct" in r.output


def test_models_eval_names_a_bad_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\nhi,1\n")
    r = runner.invoke(app, ["models", "eval", "--data", str(bad)])
    assert r.exit_code == 2
    assert "expected a 'prompt' column" in r.output
    r = runner.invoke(app, ["models", "eval", "--data", str(_write(tmp_path / "s.csv")), "--small", "nope"])
    assert r.exit_code == 2 and "'nope' is not in the data" in r.output


def test_models_eval_plot_into_a_new_folder_and_into_a_file(tmp_path):
    data = str(_write(tmp_path / "slice.csv"))
    r = runner.invoke(app, ["models", "eval", "--data", data, "--no-baseline",
                            "--plot", str(tmp_path / "new" / "curve.png")])
    assert r.exit_code == 0, r.output  # its folder is made, as --out's are
    assert (tmp_path / "new" / "curve.png").stat().st_size > 1000
    (tmp_path / "taken").write_text("")
    r = runner.invoke(app, ["models", "eval", "--data", data, "--no-baseline",
                            "--plot", str(tmp_path / "taken" / "curve.png")])
    assert r.exit_code == 2 and "--plot" in r.output and not isinstance(r.exception, OSError), r.output


def test_models_eval_names_split_when_it_is_not_a_split(tmp_path):
    r = runner.invoke(app, ["models", "eval", "--data", str(_write(tmp_path / "s.csv")), "--split", "bogus"])
    assert r.exit_code == 2 and "--split bogus: must be one of train, validation, test" in r.output, r.output


@pytest.mark.parametrize(("args", "says"), [
    (["--split", "tset"], "--split tset: must be one of train, validation, test (did you mean test?)"),
    (["--small", "small_model"], "quality column 'small_model' is not in the data (did you mean small_model_correct?)"),
    (["--large", "large_model_corect"], "quality column 'large_model_corect' is not in the data (did you mean "
     "large_model_correct?)"),
])
def test_models_eval_names_the_split_or_column_meant(tmp_path, args, says):
    """A mistyped --split or model column listed the known ones only; the one meant is named, as a spec's typo is
    (thirty-eighth session)."""
    r = runner.invoke(app, ["models", "eval", "--data", str(_write(tmp_path / "s.csv")), "--no-baseline", *args])
    assert r.exit_code == 2 and says in " ".join(r.output.split()), r.output


def test_models_eval_names_the_column_meant_for_prompt(tmp_path):
    """`promt,a_correct,b_correct` said only what it found; the column that is nearly `prompt` is named."""
    bad = tmp_path / "bad.csv"
    bad.write_text("promt,a_correct,b_correct\nhi,1,0\n")
    r = runner.invoke(app, ["models", "eval", "--data", str(bad)])
    assert r.exit_code == 2 and "(is 'promt' the 'prompt' column? rename it prompt)" in " ".join(r.output.split()), \
        r.output
