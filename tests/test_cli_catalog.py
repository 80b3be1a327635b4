"""`calltrack campaign ...` and `calltrack phone ...`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from calltrack.cli import main


def run(database: str, *args: str) -> tuple[int, dict[str, object] | None, str]:
    result = CliRunner().invoke(main, ["--database", database, *args, "--json"])
    lines = result.stdout.strip().splitlines()
    return result.exit_code, (json.loads(lines[-1]) if lines else None), result.stderr


def test_campaigns_are_added_updated_and_listed(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    run(db, "account", "add", "a")
    assert run(db, "campaign", "add", "a", "7", "Весна", "--site", "a.ru")[0] == 0
    assert run(db, "campaign", "status", "a", "7", "paused")[0] == 0
    code, listed, _ = run(db, "campaign", "list", "a")
    assert code == 0
    assert listed == {"campaigns": [{"id": 7, "name": "Весна", "site": "a.ru", "status": "paused"}]}


def test_a_bad_campaign_status_or_unknown_campaign_exits_1(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'c.db'}"
    run(db, "account", "add", "a")
    code, _, err = run(db, "campaign", "status", "a", "99", "paused")
    assert code == 1
    assert "no campaign 99" in err
    assert run(db, "campaign", "add", "a", "1", "x", "--status", "deleted")[0] == 1  # a bad choice


def test_phones_are_added_listed_and_removed(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'p.db'}"
    run(db, "account", "add", "a")
    assert run(db, "phone", "add", "a", "74950000001", "--campaign", "7", "--dynamic")[0] == 0
    code, again, err = run(db, "phone", "add", "a", "74950000001")
    assert (code, again) == (1, None)
    assert "already has the number" in err
    code, _, err = run(db, "phone", "add", "a", "+7 495")
    assert code == 1
    assert "digits only" in err
    listed = run(db, "phone", "list", "a")[1]
    assert listed == {
        "phones": [{"number": "74950000001", "campaign_id": 7, "office": "", "kind": "dynamic"}]
    }
    assert run(db, "phone", "remove", "a", "74950000001")[0] == 0
    assert run(db, "phone", "list", "a")[1] == {"phones": []}
    assert run(db, "phone", "remove", "a", "74950000001")[0] == 1
