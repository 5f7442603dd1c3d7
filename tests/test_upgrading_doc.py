"""docs/upgrading.md, where users look before an upgrade: linked from the README, and what it says a key id
becomes is what the code makes."""

from __future__ import annotations

from pathlib import Path

from aigrid.security.authenticate import JWT_KEY_PREFIX, jwt_key_id

ROOT = Path(__file__).resolve().parent.parent


def test_the_upgrade_notes_are_linked_and_name_the_jwt_key_id_the_code_makes() -> None:
    notes = (ROOT / "docs" / "upgrading.md").read_text(encoding="utf-8")
    assert "](docs/upgrading.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`jwt:<tenant>/<sub>`" in notes and "`aigrid audit query --key jwt:<sub>`" in notes
    assert JWT_KEY_PREFIX == "jwt:" and jwt_key_id("bank", "alice") == "jwt:bank/alice"
    assert jwt_key_id("eu/bank", "alice") == "jwt:eu%2Fbank/alice"  # "the tenant percent-encoded", as it says
