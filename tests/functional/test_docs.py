"""The README and CLAUDE.md match the code they describe."""

from __future__ import annotations

import re
from pathlib import Path

from ml_production_service.configs import ModelType, ServiceConfig

REPOSITORY = Path(__file__).resolve().parents[2]
README = (REPOSITORY / "README.md").read_text(encoding="utf-8")


def test_readme_opens_with_the_two_commands() -> None:
    """The first code block gives the command that serves and the command that tests."""
    first_block = README.split("```", 2)[1]
    assert "make api-run" in first_block and "make all-test" in first_block


def test_every_setting_is_documented_and_every_documented_variable_exists() -> None:
    """The README's MPS_* table lists exactly the fields of ServiceConfig."""
    documented = set(re.findall(r"\| `(MPS_[A-Z_]+)` \|", README))
    fields = {f"MPS_{name.upper()}" for name in ServiceConfig.model_fields}
    assert documented == fields
    mentioned = set(re.findall(r"MPS_[A-Z_]+[A-Z]", README))
    assert mentioned <= fields


def test_every_model_type_and_make_target_in_readme_exists() -> None:
    """Every model type is documented, and every `make X` the README names is a Makefile target."""
    for model_type in ModelType:
        assert f"`{model_type.value}`" in README
    makefiles = [REPOSITORY / "Makefile", *sorted((REPOSITORY / "mk").glob("*.mk"))]
    makefile = "\n".join(path.read_text(encoding="utf-8") for path in makefiles)
    targets = set(re.findall(r"^([a-zA-Z_-]+):", makefile, flags=re.MULTILINE))
    named = set(re.findall(r"make ([a-z][a-z-]*[a-z])(?![\w.-])", README))
    assert named <= targets, named - targets
