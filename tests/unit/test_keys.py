"""`python -m ml_production_service.keys new <id>` (`make api-key`): a key shown once, only its hash stored."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ml_production_service.guard import KeyRing, load_keys
from ml_production_service.keys import KEY_PREFIX, main

REPOSITORY = Path(__file__).resolve().parents[2]


def _printed_key(output: str) -> str:
    """The one printed line that is a key."""
    (key,) = [line for line in output.splitlines() if line.startswith(KEY_PREFIX)]
    return key


def test_new_prints_a_key_once_and_a_line_that_verifies_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Without --file: the key once, a 'shown once' notice and an id:sha256 line the service's KeyRing accepts."""
    assert main(["new", "partner-a"]) == 0
    out, err = capsys.readouterr()
    key = _printed_key(out)
    assert out.count(key) == 1 and err == ""
    assert "shown this once" in out and "only its sha256 is stored" in out
    assert len(key) == len(KEY_PREFIX) + 43, "32 random bytes in URL-safe base64"
    (line,) = [line for line in out.splitlines() if line.startswith("partner-a:")]
    keys_file = tmp_path / "keys"
    keys_file.write_text(line + "\n", encoding="utf-8")
    ring = KeyRing(load_keys(keys_file))
    assert ring.identify(key.encode()) == "partner-a"
    assert ring.identify(key[:-1].encode()) is None


def test_keys_are_random(capsys: pytest.CaptureFixture[str]) -> None:
    """Two keys for the same id differ (a key never derives from its id)."""
    keys = set()
    for _ in range(2):
        assert main(["new", "same"]) == 0
        keys.add(_printed_key(capsys.readouterr().out))
    assert len(keys) == 2


def test_file_is_created_0600_and_every_added_key_verifies(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--file creates the keys file with mode 0600, appends one line per key, and never writes a key itself."""
    keys_file = tmp_path / "keys"
    issued = {}
    for key_id in ("partner-a", "ops.team_1"):
        assert main(["new", key_id, "--file", str(keys_file)]) == 0
        out = capsys.readouterr().out
        issued[key_id] = _printed_key(out)
        assert str(keys_file) in out and f"{key_id}:" not in out, "the line went into the file, not the screen"
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    text = keys_file.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2 and not any(key in text for key in issued.values())
    ring = KeyRing(load_keys(keys_file))
    assert {key_id: ring.identify(key.encode()) for key_id, key in issued.items()} == {k: k for k in issued}


def test_file_keeps_its_comments_and_mode_and_gets_a_missing_final_newline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An existing file is appended to in place: comments kept, its own mode kept, a line break added if missing."""
    keys_file = tmp_path / "keys"
    keys_file.write_text("# partners\n\nold:" + "a" * 64, encoding="utf-8")  # no final newline
    keys_file.chmod(0o640)
    assert main(["new", "new-one", "--file", str(keys_file)]) == 0
    key = _printed_key(capsys.readouterr().out)
    lines = keys_file.read_text(encoding="utf-8").splitlines()
    assert lines[:3] == ["# partners", "", "old:" + "a" * 64] and lines[3].startswith("new-one:")
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o640
    assert KeyRing(load_keys(keys_file)).identify(key.encode()) == "new-one"


def test_a_duplicate_id_is_refused_and_the_file_is_unchanged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A second key under an id the file holds is refused (exit 1, one line); no key is printed, nothing written."""
    keys_file = tmp_path / "keys"
    assert main(["new", "partner-a", "--file", str(keys_file)]) == 0
    capsys.readouterr()
    before = keys_file.read_bytes()
    assert main(["new", "partner-a", "--file", str(keys_file)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "'partner-a' is already in" in err
    assert keys_file.read_bytes() == before


def test_a_malformed_file_is_refused_naming_its_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A keys file the service would refuse is not appended to: exit 1, naming the file and line, no key printed."""
    keys_file = tmp_path / "keys"
    keys_file.write_text("# ok\nnot a key line\n", encoding="utf-8")
    assert main(["new", "partner-a", "--file", str(keys_file)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert f"{keys_file} line 2" in err
    assert keys_file.read_text(encoding="utf-8") == "# ok\nnot a key line\n"


def test_an_unwritable_place_is_one_line_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A keys file path that is a directory, or under a missing one: exit 1 with one line, no key printed."""
    for path in (tmp_path, tmp_path / "missing" / "keys"):
        assert main(["new", "partner-a", "--file", str(path)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and len(err.splitlines()) == 1 and str(path) in err
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    "key_id",
    [
        pytest.param("", id="empty"),
        pytest.param("a b", id="space"),
        pytest.param("a:b", id="colon"),
        pytest.param("x" * 65, id="65-chars"),
        pytest.param("é", id="non-ascii"),
        pytest.param("a\nb", id="newline"),
    ],
)
def test_a_bad_id_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, key_id: str) -> None:
    """An id outside guard.KEY_ID is exit 2 with one line naming the rule; no key printed, no file created."""
    keys_file = tmp_path / "keys"
    assert main(["new", key_id, "--file", str(keys_file)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "bad key id" in err
    assert not keys_file.exists()


def test_the_module_runs_as_a_command(tmp_path: Path) -> None:
    """`python -m ml_production_service.keys new <id> --file` works as `make api-key` runs it; usage errors exit 2."""
    keys_file = tmp_path / "keys"
    command = [sys.executable, "-m", "ml_production_service.keys"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPS_")}
    made = subprocess.run(
        [*command, "new", "cli", "--file", str(keys_file)], capture_output=True, text=True, env=env, timeout=60
    )
    assert made.returncode == 0, made.stderr
    assert KeyRing(load_keys(keys_file)).identify(_printed_key(made.stdout).encode()) == "cli"
    usage = subprocess.run([*command], capture_output=True, text=True, env=env, timeout=60)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_make_api_key_runs_the_module_with_id_and_file() -> None:
    """`make api-key ID=<id> FILE=<path>` runs the module through uv, quoted; without ID it stops at a usage line."""
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "api-key", "ID=partner-a", "FILE=/tmp/mps keys"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry_run.returncode == 0, dry_run.stderr
    last = dry_run.stdout.strip().splitlines()[-1]
    assert " run --locked python -m ml_production_service.keys new 'partner-a' --file '/tmp/mps keys'" in last
    no_id = subprocess.run(["make", "--no-print-directory", "-n", "api-key"], cwd=REPOSITORY, capture_output=True)
    assert no_id.returncode == 0 and b"test -n '' || { echo 'usage: make api-key ID=<id>" in no_id.stdout
