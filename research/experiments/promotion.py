"""Gated promotion of a run's candidate into the registry, and rollback to the model it replaced.

``promote`` refuses a candidate whose validated accuracy (the mean of the repeated stratified k-fold) is below
the production model's on the same protocol, unless forced. Production is judged under the candidate's
protocol: from its manifest when that names the same folds, seed and data, otherwise by re-validating the
recipe its manifest records. The candidate's folder (artifact, fast path, manifest: whatever it holds) is
copied whole into ``<registry>/<type>/``; the folder it replaces moves whole to ``<previous>/<type>/``, so
``rollback`` restores it byte for byte (and a second rollback restores the promotion). A candidate carries its
reference profile and golden predictions (made by its run); ``refresh-reference`` records them for a model already
in the registry, without retraining it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType
from ml_production_service.factory import load_fitted, load_heuristic
from ml_production_service.manifest import ModelManifest
from ml_production_service.predictors.base import ManifestError, ModelLoadError
from ml_production_service.registry import model_dir, read_manifest
from research.experiments import evaluation
from research.experiments.common import MODELS_DIR, RESULTS_DIR, load_dataset, model_from_recipe
from research.experiments.evaluation import Protocol
from research.experiments.experiment import Run, find_run
from research.experiments.monitoring import RefreshError, refresh_reference
from research.experiments.text import pct

TOLERANCE = 1e-12
"""Equal accuracies (the same recipe retrained) pass the gate; float noise must not refuse them."""


class PromotionError(RuntimeError):
    """The promotion or rollback could not be done (missing candidate, nothing to roll back to, ...)."""


class PromotionRefused(PromotionError):
    """The gate refused the candidate: its validated accuracy is below production's."""


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict, with both numbers and where production's came from."""

    allowed: bool
    reason: str
    candidate: float
    production: float | None


def default_previous_dir(registry_dir: Path) -> Path:
    """Where the replaced production models are kept: ``registry/previous`` beside ``registry/prd``."""
    return registry_dir.parent / "previous"


def load_candidate(models_dir: Path, run: Run) -> ModelManifest:
    """Verify the run's candidate exactly as the service would load it; its manifest."""
    candidates = models_dir / run.run_id
    if not model_dir(candidates, run.model_type).is_dir():
        raise PromotionError(
            f"no candidate of run {run.run_id} in {candidates}: candidates are not committed; re-run "
            f"make train-{run.model_type.value.replace('_', '-')} to make a fresh one"
        )
    manifest = _verify(candidates, run.model_type)
    if manifest.metrics.get("run_id") != run.run_id:
        raise PromotionError(
            f"candidate in {candidates} belongs to run {manifest.metrics.get('run_id')}, not {run.run_id}"
        )
    if manifest.reference is None or manifest.golden is None:
        raise PromotionError(
            f"candidate of run {run.run_id} has no reference profile or golden predictions (it was made before "
            f"they existed): re-run make train-{run.model_type.value.replace('_', '-')} to make a fresh one"
        )
    return manifest


def _same_protocol(production: ModelManifest, run: Run) -> bool:
    protocol = run.metrics["protocol"]
    return (
        production.recipe.dataset_sha256 == run.metrics["data"]["sha256"]
        and "cv_accuracy_mean" in production.metrics
        and (
            production.metrics.get("cv_folds"),
            production.metrics.get("cv_repeats"),
            production.metrics.get("cv_seed"),
        )
        == (protocol["folds"], protocol["repeats"], protocol["seed"])
    )


def production_score(production: ModelManifest, run: Run, jobs: int = 1) -> tuple[float, str]:
    """Production's validated accuracy under the run's protocol, and where it came from."""
    if _same_protocol(production, run):
        return float(production.metrics["cv_accuracy_mean"]), "its manifest (same protocol)"
    protocol = Protocol(**{**run.metrics["protocol"], "jobs": jobs})
    dataset = load_dataset(protocol.every)
    try:
        model = model_from_recipe(production.recipe)
    except (KeyError, TypeError, ValueError) as error:
        raise PromotionError(f"production's recipe {production.recipe.estimator} cannot be rebuilt: {error}") from None
    splits = evaluation.repeated_splits(dataset, protocol)
    scores = evaluation.repeated_cv(model, dataset, protocol, splits)
    return float(scores["accuracy_mean"]), "re-validating its recipe under the candidate's protocol"


def gate(run: Run, registry_dir: Path, jobs: int = 1) -> GateDecision:
    """Compare the run's validated accuracy with production's on the same protocol."""
    candidate = float(run.metrics["repeated_cv"]["accuracy_mean"])
    protocol = run.metrics["protocol"]
    what = f"{protocol['repeats']}x{protocol['folds']}-fold CV accuracy"
    if not model_dir(registry_dir, run.model_type).exists():
        return GateDecision(True, "no production model yet", candidate, None)
    try:
        production = read_manifest(registry_dir, run.model_type)
    except ManifestError as error:
        return GateDecision(
            False, f"production's manifest cannot be read, so nothing can be compared ({error})", candidate, None
        )
    score, source = production_score(production, run, jobs)
    allowed = candidate >= score - TOLERANCE
    verdict = "not below" if allowed else "below"
    reason = f"candidate {what} {pct(candidate, 2)} is {verdict} production's {pct(score, 2)} (from {source})"
    return GateDecision(allowed, reason, candidate, score)


def _files(folder: Path) -> dict[str, bytes]:
    return (
        {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()} if folder.is_dir() else {}
    )


def _verify(registry_dir: Path, model_type: ModelType) -> ModelManifest:
    """Load the model in ``registry_dir`` as the service would (integrity, versions, golden check, fast path)."""
    if not model_type.is_fitted:
        read_manifest(registry_dir, model_type)  # the heuristic needs no manifest to serve; a candidate must have one
        return load_heuristic(registry_dir).manifest
    return load_fitted(registry_dir, model_type).manifest


def promote(
    model_type: ModelType,
    run_id: str | None,
    *,
    results_dir: Path = RESULTS_DIR,
    models_dir: Path = MODELS_DIR,
    registry_dir: Path = DEFAULT_REGISTRY_DIR,
    previous_dir: Path | None = None,
    force: bool = False,
    jobs: int = 1,
) -> str:
    """Promote run ``run_id``'s candidate (the newest run when None) through the gate; a one-line outcome."""
    run = find_run(results_dir, model_type, run_id)
    manifest = load_candidate(models_dir, run)
    candidate_folder = model_dir(models_dir / run.run_id, model_type)
    production_folder = model_dir(registry_dir, model_type)
    if _files(candidate_folder) == _files(production_folder):
        return f"{model_type.value}: production already serves run {run.run_id}; nothing to do"
    decision = gate(run, registry_dir, jobs)
    if not decision.allowed and not force:
        raise PromotionRefused(f"{model_type.value}: refused: {decision.reason}; FORCE=1 promotes it anyway")
    previous = model_dir(previous_dir or default_previous_dir(registry_dir), model_type)
    staging = registry_dir / f".{model_type.value}.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    registry_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(candidate_folder, staging)
    replaced = production_folder.exists()
    if replaced:
        shutil.rmtree(previous, ignore_errors=True)
        previous.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(production_folder, previous)
    staging.rename(production_folder)
    try:
        _verify(registry_dir, model_type)
    except ModelLoadError:
        shutil.rmtree(production_folder)
        if previous.exists():
            shutil.move(previous, production_folder)
        raise
    forced = " (FORCED past the gate)" if not decision.allowed else ""
    kept = f"; the replaced model is kept in {previous}" if replaced else ""
    return (
        f"{model_type.value}: promoted run {run.run_id} (version {manifest.version}){forced}: {decision.reason}{kept}"
    )


def rollback(
    model_type: ModelType, *, registry_dir: Path = DEFAULT_REGISTRY_DIR, previous_dir: Path | None = None
) -> str:
    """Swap production with the model it replaced; a second rollback swaps them back."""
    previous = model_dir(previous_dir or default_previous_dir(registry_dir), model_type)
    production = model_dir(registry_dir, model_type)
    if not previous.is_dir():
        raise PromotionError(f"{model_type.value}: nothing to roll back to: {previous} does not exist")
    parked = registry_dir / f".{model_type.value}.rollback"
    shutil.rmtree(parked, ignore_errors=True)
    if production.exists():
        shutil.move(production, parked)
    shutil.move(previous, production)
    if parked.exists():
        shutil.move(parked, previous)
    manifest = _verify(registry_dir, model_type)
    run = manifest.metrics.get("run_id", "unknown")
    return f"{model_type.value}: rolled back to version {manifest.version} (run {run})"


def parse_model_type(name: str) -> ModelType:
    """``random_forest`` or ``random-forest``; argparse-friendly."""
    try:
        return ModelType(name.replace("-", "_"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown model {name!r}; one of {', '.join(m.value for m in ModelType)}"
        ) from None


def promote_from_args(model_type: ModelType, run_id: str | None, args: argparse.Namespace) -> str:
    """``promote`` with the folders, force and jobs of a parsed command line (shared by the CLIs)."""
    return promote(
        model_type,
        run_id,
        results_dir=args.results_dir,
        models_dir=args.models_dir,
        registry_dir=args.registry_dir,
        previous_dir=args.previous_dir,
        force=args.force,
        jobs=args.jobs,
    )


def main(argv: list[str] | None = None) -> int:
    """``promote --model TYPE [--run ID] [--force]``, ``rollback --model TYPE`` or ``refresh-reference [--model T]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=["promote", "rollback", "refresh-reference"])
    parser.add_argument(
        "--model", type=parse_model_type, default=None, help="required, except by refresh-reference (default: all)"
    )
    parser.add_argument("--run", default=None, help="run id (default: the newest run of the model)")
    parser.add_argument("--force", action="store_true", help="promote even if the gate refuses")
    parser.add_argument("--registry-dir", type=Path, default=DEFAULT_REGISTRY_DIR)
    parser.add_argument("--previous-dir", type=Path, default=None, help="default: <registry-dir>/../previous")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    if args.model is None and args.action != "refresh-reference":
        parser.error(f"{args.action} needs --model")
    try:
        if args.action == "refresh-reference":
            for model_type in [args.model] if args.model else list(ModelType):
                print(refresh_reference(args.registry_dir, model_type))
        elif args.action == "rollback":
            print(rollback(args.model, registry_dir=args.registry_dir, previous_dir=args.previous_dir))
        else:
            print(promote_from_args(args.model, args.run, args))
    except (PromotionError, RefreshError, LookupError, ModelLoadError) as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
