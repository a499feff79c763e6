"""Schemathesis against the service's own /openapi.json, in-process (ASGI), for every model type.

This is ``st run --checks all`` without a network: the engine behind the CLI runs every phase (explicit
examples, coverage, fuzzing in positive and negative mode, then stateful scenarios over the schema's links
and the links schemathesis infers) with every built-in check on. Generation is bounded, derandomized and
seeded, and the Hypothesis example database is off, so a run is reproducible and replays nothing from earlier
runs (Hypothesis still keeps its charmap and constants caches in .hypothesis/, which ignores itself in git).

(``schemathesis.pytest.from_fixture`` would give one pytest item per operation, but the lazy loader of
schemathesis 4.32.5 sets ``Function._nodeid``, which pytest 9.2 no longer has; and a schema loaded at import
time would start every model's lifespan during collection.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import schemathesis
from schemathesis import engine
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.failures import Failure
from schemathesis.engine import Status, StopReason, events
from schemathesis.engine.run import PhaseName
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.schemas import OpenApiSchema

from ml_production_service.configs import ModelType, ServiceConfig
from ml_production_service.server.app import create_app

# Four models through every phase take 30-55 s on two cores: all-test, not test-fast.
pytestmark = pytest.mark.slow

SEED = 20261128
# Hypothesis examples per operation in the fuzzing phase; the examples and coverage phases are finite anyway.
MAX_EXAMPLES = 40
# The most calls one stateful scenario chains through the links.
STATEFUL_STEPS = 6
MODEL_TYPES = [pytest.param(model_type, id=model_type.value) for model_type in ModelType]
TESTING_PHASES = (PhaseName.EXAMPLES, PhaseName.COVERAGE, PhaseName.FUZZING, PhaseName.STATEFUL_TESTING)
# Long generated bodies are cut in the report; the reproduction keeps its start and its end (the URL).
PREVIEW = 400


def schemathesis_config() -> schemathesis.Config:
    """Every check and testing phase on; generation bounded, derandomized, seeded, and without a database."""
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            # Keep testing an operation after its first failure, so that one run lists every distinct failure.
            "continue-on-failure": True,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "checks": {"enabled": True},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS},
            },
        }
    )


@dataclass(frozen=True, slots=True)
class Finding:
    """One distinct failure: where, which check, why, how to reproduce it, and what the service answered."""

    operation: str
    check: str
    title: str
    message: str
    reproduction: str
    status: int | None
    body: str

    def __str__(self) -> str:
        message = " ".join(self.message.split())
        reproduction = self.reproduction
        if len(reproduction) > 2 * PREVIEW:
            reproduction = f"{reproduction[:PREVIEW]} [...] {reproduction[-PREVIEW:]}"
        answer = f"HTTP {self.status} {self.body}" if self.status is not None else "no response"
        return f"{self.operation} [{self.check}] {self.title}: {message}\n    {reproduction}\n    -> {answer}"


@dataclass(slots=True)
class RunResult:
    """What one engine run found, which phases it went through, and which links its scenarios followed."""

    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    phases: dict[PhaseName, Status] = field(default_factory=dict)
    links_followed: set[str] = field(default_factory=set)
    stop_reason: StopReason | None = None


def _failures(event: events.ScenarioFinished) -> Iterator[tuple[Failure, Finding]]:
    recorder = event.recorder
    for case_id, checks in recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            failure = check.failure_info.failure
            response = recorder.find_response(case_id=case_id)
            yield (
                failure,
                Finding(
                    operation=failure.operation or recorder.label,
                    check=check.name,
                    title=failure.title,
                    message=failure.message,
                    reproduction=check.failure_info.code_sample,
                    status=response.status_code if response is not None else None,
                    body=response.text[:PREVIEW] if response is not None else "",
                ),
            )


def run_schemathesis(schema: OpenApiSchema) -> RunResult:
    """Run every phase to the end. Failures are deduplicated the way schemathesis reports them: one per
    operation, check and kind of failure (an undocumented 404 and an undocumented 400 are two)."""
    result = RunResult()
    findings: dict[tuple[str, str, Failure], Finding] = {}
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for failure, finding in _failures(event):
                findings.setdefault((finding.operation, finding.check, failure), finding)
            result.links_followed.update(
                node.transition.id
                for node in event.recorder.cases.values()
                if node.transition is not None and node.is_transition_applied
            )
        elif isinstance(event, events.PhaseFinished):
            result.phases[event.phase.name] = event.status
        elif isinstance(event, events.NonFatalError):
            result.errors.append(f"{event.label}: {event.info.title}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            raise event.exception
        elif isinstance(event, events.EngineFinished):
            result.stop_reason = event.stop_reason
            for failure in event.failures:  # from checks that judge the whole run
                finding = Finding(
                    operation=failure.operation or "the whole run",
                    check=", ".join(failure.checks) or failure.code,
                    title=failure.title,
                    message=failure.message,
                    reproduction="",
                    status=None,
                    body="",
                )
                findings.setdefault((finding.operation, finding.check, failure), finding)
    result.findings = sorted(findings.values(), key=lambda f: (f.operation, f.check, f.title, f.status or 0))
    return result


@pytest.fixture(scope="module", params=MODEL_TYPES)
def api_schema(request: pytest.FixtureRequest) -> Iterator[OpenApiSchema]:
    """The schema of the service serving each model type, fetched from its /openapi.json over ASGI."""
    app = create_app(ServiceConfig(model_type=request.param, log_level="WARNING", log_format="json"))
    # Schemathesis' ASGI client starts the app's lifespan when it first enters (here, to fetch the schema)
    # and keeps it running for every later request to this app, until shutdown_lifespans().
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=schemathesis_config())
    try:
        assert app.state.ready, "the lifespan did not run: the model is not loaded"
        yield schema
    finally:
        shutdown_lifespans()
    assert not app.state.ready, "the lifespan did not shut down"


@pytest.fixture(scope="module")
def run(api_schema: OpenApiSchema) -> RunResult:
    """One full run per model type, shared by the tests below."""
    return run_schemathesis(api_schema)


def test_every_check_is_enabled(api_schema: OpenApiSchema) -> None:
    """Every check schemathesis registers is on (max_response_time needs a limit: it is a budget, not conformance)."""
    load_all_checks()
    checks = api_schema.config.checks_config_for(operation=None, phase=None)
    assert len(CHECKS.get_all_names()) >= 14
    assert [name for name in CHECKS.get_all_names() if not checks.get_by_name(name=name).enabled] == []


def test_every_phase_runs(run: RunResult) -> None:
    """Examples, coverage, fuzzing and stateful all run (none skipped for want of operations or links), cleanly."""
    assert [phase.value for phase in TESTING_PHASES if run.phases.get(phase) in (None, Status.SKIP)] == []
    assert run.errors == []
    assert run.stop_reason is StopReason.COMPLETED


def test_stateful_scenarios_follow_links(api_schema: OpenApiSchema, run: RunResult) -> None:
    """The stateful phase chains operations: at least one link is followed with values from a real response."""
    total = api_schema.statistic.transitions.total
    assert total > 0, "the schema has no links, documented or inferred"
    assert run.links_followed, f"none of the {total} links was followed: no response ever supplied their values"


def test_no_check_fails(run: RunResult) -> None:
    """No operation fails any check, in any phase."""
    assert not run.findings, f"{len(run.findings)} distinct failures:\n" + "\n".join(map(str, run.findings))
