"""Configuration from MPS_* variables: defaults, parsing, and one-line errors that say what to fix."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

import ml_production_service
from ml_production_service.__main__ import main
from ml_production_service.configs import (
    ConfigError,
    LogFormat,
    ModelType,
    ServiceConfig,
    get_config,
    load_config,
)

REPOSITORY_REGISTRY = Path(ml_production_service.__file__).resolve().parent.parent / "registry" / "prd"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MPS_* variable from the developer's shell, and no cached configuration, leaks into a test."""
    for name in list(os.environ):
        if name.upper().startswith("MPS_"):
            monkeypatch.delenv(name)
    get_config.cache_clear()
    yield
    get_config.cache_clear()


def test_defaults_serve_the_heuristic_on_port_8000() -> None:
    """With no variables set the service serves the heuristic on 0.0.0.0:8000 at INFO with safe limits."""
    config = ServiceConfig()
    assert config.model_type is ModelType.HEURISTIC
    assert config.log_level == "INFO"
    assert config.log_format is None
    assert (config.api_host, config.api_port) == ("0.0.0.0", 8000)
    assert config.workers == (os.cpu_count() or 1)
    assert config.max_body_bytes == 1024 * 1024
    assert config.max_batch_size == 1000
    assert config.allow_version_mismatch is False
    assert config.fast_path is True


def test_default_registry_is_the_repository_registry_whatever_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Starting the service from another folder still finds the promoted models in registry/prd."""
    monkeypatch.chdir(tmp_path)
    registry_dir = ServiceConfig().registry_dir
    assert registry_dir.is_absolute()
    assert registry_dir == REPOSITORY_REGISTRY
    assert (registry_dir / "heuristic" / "manifest.json").is_file()


def test_every_setting_is_read_from_its_mps_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each MPS_* variable changes the setting it names."""
    settings = {
        "MPS_MODEL_TYPE": "xgboost",
        "MPS_LOG_LEVEL": "WARNING",
        "MPS_LOG_FORMAT": "console",
        "MPS_API_HOST": "127.0.0.1",
        "MPS_API_PORT": "9001",
        "MPS_WORKERS": "3",
        "MPS_REGISTRY_DIR": str(tmp_path),
        "MPS_MAX_BODY_BYTES": "2048",
        "MPS_MAX_BATCH_SIZE": "7",
        "MPS_ALLOW_VERSION_MISMATCH": "true",
        "MPS_FAST_PATH": "false",
        "MPS_INLINE_PREDICT_MAX_US": "0",
        "MPS_GRACEFUL_TIMEOUT_S": "2.5",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    config = load_config()
    assert config.model_type is ModelType.XGBOOST
    assert config.log_level == "WARNING"
    assert config.log_format is LogFormat.CONSOLE
    assert (config.api_host, config.api_port, config.workers) == ("127.0.0.1", 9001, 3)
    assert config.registry_dir == tmp_path
    assert (config.max_body_bytes, config.max_batch_size) == (2048, 7)
    assert config.allow_version_mismatch is True
    assert config.fast_path is False
    assert config.inline_predict_max_us == 0.0
    assert config.graceful_timeout_s == 2.5


@pytest.mark.parametrize("model_type", [pytest.param(m, id=m.value) for m in ModelType])
def test_every_model_type_can_be_chosen_by_its_value(monkeypatch: pytest.MonkeyPatch, model_type: ModelType) -> None:
    """MPS_MODEL_TYPE accepts each documented model type."""
    monkeypatch.setenv("MPS_MODEL_TYPE", model_type.value)
    assert load_config().model_type is model_type


@pytest.mark.parametrize("value", ["debug", "Warning", "error"])
def test_log_level_is_accepted_in_any_case(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """MPS_LOG_LEVEL=debug works as well as DEBUG."""
    monkeypatch.setenv("MPS_LOG_LEVEL", value)
    assert load_config().log_level == value.upper()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        pytest.param(
            "MPS_MODEL_TYPE",
            "lstm",
            "allowed values: heuristic, decision_tree, random_forest, xgboost",
            id="unknown-model-type",
        ),
        pytest.param("MPS_LOG_FORMAT", "xml", "allowed values: json, console", id="unknown-log-format"),
        pytest.param(
            "MPS_LOG_LEVEL", "LOUD", "allowed values: DEBUG, INFO, WARNING, ERROR, CRITICAL", id="unknown-log-level"
        ),
        pytest.param("MPS_API_PORT", "0", "greater than or equal to 1", id="port-zero"),
        pytest.param("MPS_API_PORT", "65536", "less than or equal to 65535", id="port-too-large"),
        pytest.param("MPS_API_PORT", "abc", "valid integer", id="port-not-a-number"),
        pytest.param("MPS_MAX_BODY_BYTES", "100", "greater than or equal to 1024", id="body-limit-too-small"),
        pytest.param("MPS_WORKERS", "0", "greater than or equal to 1", id="no-workers"),
        pytest.param("MPS_ALLOW_VERSION_MISMATCH", "maybe", "valid boolean", id="not-a-boolean"),
    ],
)
def test_invalid_setting_fails_with_one_line_naming_variable_value_and_rule(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    """A bad value stops start-up with one line naming the variable, the value and what is allowed."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_config()
    message = str(caught.value)
    assert "\n" not in message
    assert f"{variable}={value!r}" in message
    assert expected in message
    # The pydantic error (many lines, internal field names) is not chained onto the traceback.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_invalid_log_level_is_reported_as_it_was_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    """MPS_LOG_LEVEL=verbose is reported as 'verbose', the value the user actually set."""
    monkeypatch.setenv("MPS_LOG_LEVEL", "verbose")
    with pytest.raises(ConfigError, match="MPS_LOG_LEVEL='verbose'"):
        load_config()


def test_several_invalid_settings_are_all_named_on_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two bad variables are both reported at once, still on one line."""
    monkeypatch.setenv("MPS_MODEL_TYPE", "lstm")
    monkeypatch.setenv("MPS_API_PORT", "abc")
    with pytest.raises(ConfigError) as caught:
        load_config()
    message = str(caught.value)
    assert "\n" not in message
    assert "MPS_MODEL_TYPE='lstm'" in message
    assert "MPS_API_PORT='abc'" in message


def test_a_bad_setting_stops_the_server_command_with_exit_2_and_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m ml_production_service`` with a bad value exits 2 with the one-line message on stderr, no traceback,
    before anything else starts."""
    monkeypatch.setenv("MPS_API_PORT", "abc")
    monkeypatch.setenv("MPS_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert main() == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{caught.value}\n"
    assert "MPS_API_PORT='abc'" in captured.err and "MPS_LOG_FORMAT='xml'" in captured.err


def test_config_cannot_be_changed_after_it_is_built() -> None:
    """A running service's settings are fixed: assigning to one fails."""
    config = ServiceConfig()
    with pytest.raises(ValidationError):
        config.api_port = 9000  # type: ignore[misc]


def test_get_config_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every caller in a process gets the same configuration, read at first use."""
    monkeypatch.setenv("MPS_MODEL_TYPE", "xgboost")
    first = get_config()
    monkeypatch.setenv("MPS_MODEL_TYPE", "random_forest")
    assert get_config() is first
    assert first.model_type is ModelType.XGBOOST
    get_config.cache_clear()
    assert get_config().model_type is ModelType.RANDOM_FOREST


def test_get_config_raises_config_error_for_a_bad_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cached accessor fails as clearly as load_config does."""
    monkeypatch.setenv("MPS_MODEL_TYPE", "lstm")
    with pytest.raises(ConfigError, match="MPS_MODEL_TYPE='lstm'"):
        get_config()
