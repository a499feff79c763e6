"""Start-up checks of ``python -m ml_production_service``: the open-files limit and the metrics folder."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ml_production_service.__main__ import (
    FD_MARGIN,
    MULTIPROCESS_ENV,
    check_file_limit,
    check_metrics_folder,
    prepare_multiprocess_metrics,
    server_config,
)
from ml_production_service.configs import REPOSITORY_ROOT, ServiceConfig
from ml_production_service.server import metrics
from ml_production_service.server.protocol import ConnectionLimits, LimitedHttpToolsProtocol


def test_file_limit_that_is_high_enough_is_left_alone() -> None:
    """Nothing to do when the soft limit already covers the connections plus the margin."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert check_file_limit(1) is None
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before


def test_file_limit_that_cannot_be_raised_enough_is_one_line_naming_both_numbers() -> None:
    """A limit past the hard limit (or the kernel's ceiling) is refused with the numbers needed and allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    problem = check_file_limit(10**9)
    assert problem is not None and "\n" not in problem
    assert f"needs {10**9 + FD_MARGIN} file descriptors" in problem
    assert f"limit is {soft}" in problem or "hard limit unlimited" in problem
    assert "MPS_MAX_CONNECTIONS" in problem
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


def test_file_limit_is_raised_up_to_the_hard_limit() -> None:
    """A soft limit below what the connections need is raised (here in a child started with a low soft limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 200 + FD_MARGIN:
        pytest.skip(f"hard open-files limit {hard} is too low to raise anything")
    script = (
        "import resource\n"
        "from ml_production_service.__main__ import check_file_limit\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (100, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "print(check_file_limit(200), *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    problem, new_soft, new_hard = result.stdout.split()
    expected = 200 + FD_MARGIN if hard == resource.RLIM_INFINITY else hard
    assert (problem, int(new_soft), int(new_hard)) == ("None", expected, hard)


def test_metrics_folder_problems_are_named(tmp_path: Path) -> None:
    """Missing, a file, not writable and full folders are each refused with what is wrong."""
    assert check_metrics_folder(tmp_path) is None
    assert check_metrics_folder(tmp_path / "missing") == "does not exist"
    (tmp_path / "file").write_text("x")
    assert check_metrics_folder(tmp_path / "file") == "is not a directory"
    full = check_metrics_folder(tmp_path, min_free_bytes=2**62)
    assert full is not None and "MiB free, at least" in full


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs, where nobody may create files")
def test_metrics_folder_that_nobody_can_write_is_refused() -> None:
    """sysfs refuses new files even to root (chmod would not stop root: the tests run as root)."""
    problem = check_metrics_folder(Path("/sys/kernel"))
    assert problem is not None and problem.startswith("is not writable (")


def test_a_usable_metrics_folder_is_emptied_of_stale_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stale ``*.db`` files of an earlier run are removed; other files are left alone."""
    (tmp_path / "counter_123.db").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("keep")
    monkeypatch.setenv(MULTIPROCESS_ENV, str(tmp_path))
    assert prepare_multiprocess_metrics() == (str(tmp_path), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_unusable_metrics_folder_is_reported_and_left_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is removed from (or written to) a folder that fails the check."""
    (tmp_path / "counter_123.db").write_bytes(b"x")
    monkeypatch.setenv(MULTIPROCESS_ENV, str(tmp_path / "counter_123.db"))
    assert prepare_multiprocess_metrics() == (str(tmp_path / "counter_123.db"), "is not a directory")
    assert (tmp_path / "counter_123.db").read_bytes() == b"x"


def test_without_a_metrics_folder_a_fresh_one_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, the variable is set to a new empty temporary folder for the workers to inherit."""
    monkeypatch.setenv(MULTIPROCESS_ENV, "")  # empty is unset; monkeypatch removes what prepare sets
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempfile's documented default-folder setting
    folder, problem = prepare_multiprocess_metrics()
    assert problem is None
    assert os.environ[MULTIPROCESS_ENV] == folder
    assert Path(folder).parent == tmp_path and not list(Path(folder).iterdir())


def test_a_metrics_folder_that_cannot_be_created_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No usable temporary folder (a read-only root without a /tmp volume): one reason, no traceback."""
    monkeypatch.setenv(MULTIPROCESS_ENV, "")
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "file"))
    folder, problem = prepare_multiprocess_metrics()
    assert folder == str(tmp_path / "file")
    assert problem is not None and problem.startswith("cannot create a metrics folder here")
    assert os.environ[MULTIPROCESS_ENV] == ""


def test_the_variable_name_is_the_metrics_module_one() -> None:
    """The server command names the variable itself (importing the metrics module would import prometheus)."""
    assert MULTIPROCESS_ENV == metrics.MULTIPROCESS_ENV


def test_the_start_up_checks_never_import_prometheus_client(tmp_path: Path) -> None:
    """The supervisor never loads prometheus_client, so it never writes into the metrics folder itself."""
    script = (
        "import sys\n"
        "from ml_production_service.__main__ import prepare_multiprocess_metrics, server_config\n"
        "from ml_production_service.configs import load_config\n"
        "from ml_production_service.factory import get_predictor\n"
        "from ml_production_service.server.supervisor import GracefulMultiprocess\n"
        "config = load_config()\n"
        "get_predictor(config)\n"
        "print(prepare_multiprocess_metrics()[1], server_config(config).http.__name__,"
        " 'prometheus_client' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPS_")}
    env.update({MULTIPROCESS_ENV: str(tmp_path), "MPS_WORKERS": "2", "MPS_LOG_FORMAT": "json"})
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPOSITORY_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "LimitedHttpToolsProtocol", "False"]
    assert not list(tmp_path.iterdir())


def test_server_config_carries_the_service_settings() -> None:
    """uvicorn is configured from ServiceConfig: the limited protocol, its limits, the (float) timeouts."""
    config = ServiceConfig(
        api_host="127.0.0.1", api_port=8123, workers=3, keep_alive_timeout_s=2.5, graceful_timeout_s=0.5
    )
    uvicorn_config = server_config(config)
    assert uvicorn_config.http is LimitedHttpToolsProtocol
    assert uvicorn_config.limits == ConnectionLimits.from_config(config)
    assert (uvicorn_config.host, uvicorn_config.port, uvicorn_config.workers) == ("127.0.0.1", 8123, 3)
    assert (uvicorn_config.timeout_keep_alive, uvicorn_config.timeout_graceful_shutdown) == (2.5, 0.5)
    assert uvicorn_config.ws == "none" and uvicorn_config.factory and not uvicorn_config.server_header
