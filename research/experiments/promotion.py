"""Gated promotion of a run's candidate into the registry, a tracked history to roll back to, and reproduction.

``promote`` runs the gate (``gate.py``: non-inferior to production on the same folds, floors, not shown worse than
the heuristic) and refuses a candidate that fails it, unless forced. The candidate's folder (artifact, fast path,
manifest) is copied whole into ``<registry>/<type>/``, its manifest gaining ``metrics["gate"]`` (the decision and
every statistic); the folder it replaces moves whole into the tracked history, ``<history>/<type>/<NNNN>-<run-id>/``
(``registry/history`` beside ``registry/prd``, committed with it), which keeps the newest ``HISTORY_KEEP`` entries.
``rollback`` puts the newest entry (or ``--to <run-id>``) back into production and files the model it replaces as the
newest entry, so a second rollback undoes the first; every promotion and rollback is a line of
``<history>/<type>/log.jsonl``. ``reproduce`` retrains a fitted model from its manifest's recipe through the
registry's save path and compares the bytes; ``served_by_registry`` says whether a run's model is the one served.
A candidate carries its reference profile and golden predictions (made by its run); ``refresh-reference`` records
them for a model already in the registry, without retraining it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_production_service.configs import DEFAULT_REGISTRY_DIR, ModelType
from ml_production_service.factory import load_fitted, load_heuristic
from ml_production_service.fast_path import FAST_PATH_FILE
from ml_production_service.manifest import MANIFEST_FILE, ModelManifest
from ml_production_service.predictors.base import ManifestError, ModelLoadError
from ml_production_service.registry import ARTIFACT_FILE, model_dir, read_manifest, save_model, sha256_file
from research.experiments import gate
from research.experiments.common import (
    MODELS_DIR,
    RESULTS_DIR,
    Dataset,
    fit_final,
    load_data,
    load_dataset,
    model_from_recipe,
)
from research.experiments.experiment import Run, find_run
from research.experiments.gate import GateError, GatePolicy
from research.experiments.monitoring import RefreshError, refresh_reference

HISTORY_KEEP = 3
"""Replaced models kept per type in the tracked history (older entries are deleted; git keeps them anyway)."""
HISTORY_LOG = "log.jsonl"


class PromotionError(RuntimeError):
    """The promotion or rollback could not be done (missing candidate, nothing to roll back to, ...)."""


class PromotionRefused(PromotionError):
    """The gate refused the candidate."""


def default_history_dir(registry_dir: Path) -> Path:
    """Where replaced production models are kept: ``registry/history`` beside ``registry/prd`` (tracked)."""
    return registry_dir.parent / "history"


def load_candidate(models_dir: Path, run: Run) -> ModelManifest:
    """Verify the run's candidate exactly as the service would load it; its manifest."""
    candidates = models_dir / run.run_id
    if not model_dir(candidates, run.model_type).is_dir():
        raise PromotionError(
            f"no candidate of run {run.run_id} in {candidates}: candidates are not committed; re-run "
            f"make train-{run.model_type.value.replace('_', '-')} to make a fresh one"
        )
    _verify(candidates, run.model_type)
    manifest = read_manifest(candidates, run.model_type)
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


def _verify(registry_dir: Path, model_type: ModelType) -> ModelManifest:
    """Load the model in ``registry_dir`` as the service would (integrity, versions, golden check, fast path)."""
    if not model_type.is_fitted:
        read_manifest(registry_dir, model_type)  # the heuristic needs no manifest to serve; a candidate must have one
        return load_heuristic(registry_dir).manifest
    return load_fitted(registry_dir, model_type).manifest


def _served_files(folder: Path) -> dict[str, Any]:
    """What a model folder serves, by file name: the manifest without its gate record (which promotion adds), the
    artifact and the fast path (a model card beside them is documentation)."""
    files: dict[str, Any] = {}
    for path in [folder / name for name in (MANIFEST_FILE, ARTIFACT_FILE, FAST_PATH_FILE)]:
        if path.name == MANIFEST_FILE and path.is_file():
            try:
                manifest = json.loads(path.read_bytes())
                manifest.get("metrics", {}).pop(gate.MANIFEST_KEY, None)
            except (ValueError, AttributeError):
                manifest = path.read_bytes()
            files[path.name] = manifest
        elif path.is_file():
            files[path.name] = path.read_bytes()
    return files


def _label(folder: Path) -> str:
    """How a model folder is named in the history: its run id, else its version."""
    try:
        metrics = json.loads((folder / MANIFEST_FILE).read_bytes())
        return str(metrics.get("metrics", {}).get("run_id") or f"version-{metrics['version']}")
    except (OSError, ValueError, KeyError, AttributeError):
        return "unreadable"


def history_entries(history_dir: Path, model_type: ModelType) -> list[Path]:
    """The history entries of ``model_type``, oldest first (``<NNNN>-<label>`` folders)."""
    folder = model_dir(history_dir, model_type)
    if not folder.is_dir():
        return []
    entries = [path for path in folder.iterdir() if path.is_dir() and path.name.split("-", 1)[0].isdigit()]
    return sorted(entries, key=lambda path: int(path.name.split("-", 1)[0]))


def _next_number(history_dir: Path, model_type: ModelType) -> int:
    """One more than any entry number ever used (in the folder or the log): names are never reused."""
    names = [entry.name for entry in history_entries(history_dir, model_type)]
    log = model_dir(history_dir, model_type) / HISTORY_LOG
    if log.is_file():
        names += [str(json.loads(line).get("kept")) for line in log.read_text(encoding="utf-8").splitlines() if line]
    numbers = [int(name.split("-", 1)[0]) for name in names if name.split("-", 1)[0].isdigit()]
    return max(numbers, default=0) + 1


def _push(history_dir: Path, model_type: ModelType, folder: Path) -> Path:
    """Move a model folder into the history as its newest entry."""
    entry = model_dir(history_dir, model_type) / f"{_next_number(history_dir, model_type):04d}-{_label(folder)}"
    entry.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(folder, entry)
    return entry


def _prune(history_dir: Path, model_type: ModelType, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` entries; their names."""
    entries = history_entries(history_dir, model_type)
    gone = entries[: max(len(entries) - keep, 0)]
    for entry in gone:
        shutil.rmtree(entry)
    return [entry.name for entry in gone]


def _log(history_dir: Path, model_type: ModelType, **event: Any) -> None:
    """Append one event to ``<history>/<type>/log.jsonl``."""
    path = model_dir(history_dir, model_type) / HISTORY_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    at = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    with path.open("a", encoding="utf-8") as log:
        log.write(json.dumps({"at": at, **event}) + "\n")


def _migrate_legacy(registry_dir: Path, history_dir: Path, model_type: ModelType) -> None:
    """A model kept in the old untracked ``registry/previous/<type>`` becomes the newest history entry."""
    legacy = model_dir(registry_dir.parent / "previous", model_type)
    if legacy.is_dir():
        entry = _push(history_dir, model_type, legacy)
        _log(history_dir, model_type, action="migrate", kept=entry.name, source=str(legacy))
        if not any(legacy.parent.iterdir()):
            legacy.parent.rmdir()


def _check_keep(keep: int) -> None:
    if keep < 1:
        raise PromotionError(f"the history must keep at least one model to roll back to, not {keep}")


def promote(
    model_type: ModelType,
    run_id: str | None,
    *,
    results_dir: Path = RESULTS_DIR,
    models_dir: Path = MODELS_DIR,
    registry_dir: Path = DEFAULT_REGISTRY_DIR,
    history_dir: Path | None = None,
    force: bool = False,
    jobs: int = 1,
    margin: float | None = None,
    policy: GatePolicy | None = None,
    keep: int = HISTORY_KEEP,
) -> str:
    """Promote run ``run_id``'s candidate (the newest run when None) through the gate; what happened.

    ``policy`` defaults to the recipe's gate section with ``margin`` (when given) overriding its margin.
    """
    _check_keep(keep)
    history_dir = history_dir or default_history_dir(registry_dir)
    run = find_run(results_dir, model_type, run_id)
    manifest = load_candidate(models_dir, run)
    candidate_folder = model_dir(models_dir / run.run_id, model_type)
    production_folder = model_dir(registry_dir, model_type)
    if _served_files(candidate_folder) == _served_files(production_folder):
        return f"{model_type.value}: production already serves run {run.run_id}; nothing to do"
    try:
        policy = policy or GatePolicy.load(model_type, margin=margin)
        record = gate.evaluate(run, registry_dir, results_dir, policy, jobs)
    except GateError as error:
        raise PromotionError(f"{model_type.value}: the gate cannot decide: {error}") from None
    if not record.allowed and not force:
        raise PromotionRefused(
            f"{model_type.value}: refused: {'; '.join(record.reasons)}\n  {record.summary}\n"
            "  FORCE=1 promotes it anyway"
        )
    record = record.as_forced() if force else record
    _migrate_legacy(registry_dir, history_dir, model_type)

    staging = registry_dir / ".incoming"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(candidate_folder, model_dir(staging, model_type))
    metrics = {**manifest.metrics, gate.MANIFEST_KEY: record.model_dump(mode="json")}
    save_model(staging, manifest.model_copy(update={"metrics": metrics}), None)
    kept = _push(history_dir, model_type, production_folder) if production_folder.exists() else None
    model_dir(staging, model_type).rename(production_folder)
    staging.rmdir()
    try:
        _verify(registry_dir, model_type)
    except ModelLoadError:
        shutil.rmtree(production_folder)
        if kept is not None:
            shutil.move(kept, production_folder)
        raise
    pruned = _prune(history_dir, model_type, keep)
    _log(
        history_dir,
        model_type,
        action="promote",
        serving=run.run_id,
        kept=kept.name if kept else None,
        forced=record.forced,
        pruned=pruned,
    )
    gate.write(run, record)
    forced = " (FORCED past the gate)" if record.forced else ""
    where = f"; the replaced model is kept in {kept}" if kept else ""
    return (
        f"{model_type.value}: promoted run {run.run_id} (version {manifest.version}){forced}{where}\n"
        f"  {record.summary}\n  the decision: {run.directory / gate.GATE_REPORT}"
    )


def _pick(entries: list[Path], to: str | None) -> Path | None:
    if to is None:
        return entries[-1] if entries else None
    matches = [entry for entry in entries if to in (entry.name, entry.name.split("-", 1)[1])]
    return matches[-1] if matches else None


def rollback(
    model_type: ModelType,
    *,
    registry_dir: Path = DEFAULT_REGISTRY_DIR,
    history_dir: Path | None = None,
    to: str | None = None,
    keep: int = HISTORY_KEEP,
) -> str:
    """Serve the newest history entry (or the one named ``to``: entry name or run id) again.

    The model it replaces becomes the newest history entry, so a second rollback undoes the first.
    """
    _check_keep(keep)
    history_dir = history_dir or default_history_dir(registry_dir)
    _migrate_legacy(registry_dir, history_dir, model_type)
    entries = history_entries(history_dir, model_type)
    entry = _pick(entries, to)
    if entry is None:
        names = ", ".join(path.name for path in entries) or "none"
        raise PromotionError(
            f"{model_type.value}: nothing to roll back to{f' named {to!r}' if to else ''} in "
            f"{model_dir(history_dir, model_type)} (entries: {names})"
        )
    production = model_dir(registry_dir, model_type)
    parked = registry_dir / f".{model_type.value}.rollback"
    shutil.rmtree(parked, ignore_errors=True)
    if production.exists():
        shutil.move(production, parked)
    shutil.move(entry, production)
    try:
        manifest = _verify(registry_dir, model_type)
    except ModelLoadError:
        shutil.move(production, entry)
        if parked.exists():
            shutil.move(parked, production)
        raise
    kept = _push(history_dir, model_type, parked) if parked.exists() else None
    pruned = _prune(history_dir, model_type, keep)
    run = str(manifest.metrics.get("run_id", "unknown"))
    _log(
        history_dir,
        model_type,
        action="rollback",
        serving=run,
        restored=entry.name,
        kept=kept.name if kept else None,
        pruned=pruned,
    )
    where = f"; the model it replaced is kept in {kept} (a second rollback restores it)" if kept else ""
    return f"{model_type.value}: rolled back to version {manifest.version} (run {run}){where}"


def training_rows(manifest: ModelManifest) -> Dataset:
    """The rows a manifest's model was trained on: the every-N-th iris rows whose sha256 the recipe records."""
    recipe = manifest.recipe
    total = len(load_data()[1])
    for every in range(1, total + 1):
        if recipe.training_rows in (None, len(range(0, total, every))):
            dataset = load_dataset(every)
            if dataset.fingerprint == recipe.dataset_sha256:
                return dataset
    raise PromotionError(
        f"{manifest.model_type.value}: no every-N-th selection of iris has the training rows' sha256 "
        f"{recipe.dataset_sha256}: the data changed, so the model cannot be retrained as it was"
    )


def retrain(registry_dir: Path, model_type: ModelType, out_dir: Path) -> ModelManifest:
    """Refit the recipe of ``registry_dir``'s model on its training rows and save it into ``out_dir`` as promotion
    does (``registry.save_model``: model.joblib, model.onnx, manifest.json); the new manifest."""
    if not model_type.is_fitted:
        raise PromotionError(f"{model_type.value} learns nothing from data: there is nothing to retrain")
    manifest = read_manifest(registry_dir, model_type)
    dataset = training_rows(manifest)
    model = model_from_recipe(manifest.recipe)
    return save_model(out_dir, manifest, fit_final(model, dataset.features, dataset.targets))


def reproduce(registry_dir: Path, model_type: ModelType) -> dict[str, tuple[str, str]]:
    """Each artifact file of ``registry_dir``'s model: (its sha256, the sha256 of a fresh retrain's file)."""
    committed = model_dir(registry_dir, model_type)
    with tempfile.TemporaryDirectory(prefix="mps-reproduce-") as scratch:
        retrained = retrain(registry_dir, model_type, Path(scratch))
        files = [retrained.artifact, retrained.fast_path.artifact if retrained.fast_path else None]
        return {
            name: (
                sha256_file(committed / name) if (committed / name).is_file() else "missing",
                sha256_file(model_dir(Path(scratch), model_type) / name),
            )
            for name in files
            if name is not None
        }


def served_by_registry(run: Run, registry_dir: Path) -> bool:
    """Whether ``registry_dir`` serves exactly ``run``'s model: the bytes, not the run id.

    A fitted model's files must hash to what the run recorded for its candidate (model.joblib, model.onnx); the
    heuristic has no artifact (its rules are code), so its manifest must name the run's recipe and data.
    """
    try:
        manifest = read_manifest(registry_dir, run.model_type)
    except ManifestError:
        return False
    record = run.record
    if not run.model_type.is_fitted:
        recipe = manifest.recipe
        return (
            recipe.estimator == record.config.estimator
            and recipe.hyperparameters == record.parameters
            and recipe.dataset_sha256 == record.data.sha256
        )
    pairs = [(manifest.artifact, record.candidate.sha256)]
    fast_path = manifest.fast_path.artifact if manifest.fast_path else None
    if fast_path or record.candidate.fast_path_sha256:
        pairs.append((fast_path, record.candidate.fast_path_sha256))
    folder = model_dir(registry_dir, run.model_type)
    return all(
        name is not None and sha256 is not None and (folder / name).is_file() and sha256_file(folder / name) == sha256
        for name, sha256 in pairs
    )


def parse_model_type(name: str) -> ModelType:
    """``random_forest`` or ``random-forest``; argparse-friendly."""
    try:
        return ModelType(name.replace("-", "_"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown model {name!r}; one of {', '.join(m.value for m in ModelType)}"
        ) from None


def add_promotion_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a promotion (shared by this CLI and the per-family ones)."""
    parser.add_argument("--force", action="store_true", help="promote even if the gate refuses (recorded as forced)")
    parser.add_argument(
        "--margin", type=float, default=None, help="gate margin as a fraction (0.01 = 1 point; default: the recipe's)"
    )
    parser.add_argument("--registry-dir", type=Path, default=DEFAULT_REGISTRY_DIR)
    parser.add_argument("--history-dir", type=Path, default=None, help="default: <registry-dir>/../history")
    parser.add_argument("--keep", type=int, default=HISTORY_KEEP, help="replaced models kept per type")


def promote_from_args(model_type: ModelType, run_id: str | None, args: argparse.Namespace) -> str:
    """``promote`` with the folders and options of a parsed command line (shared by the CLIs)."""
    return promote(
        model_type,
        run_id,
        results_dir=args.results_dir,
        models_dir=args.models_dir,
        registry_dir=args.registry_dir,
        history_dir=args.history_dir,
        force=args.force,
        jobs=args.jobs,
        margin=args.margin,
        keep=args.keep,
    )


def _reproduce_all(registry_dir: Path, model_type: ModelType | None) -> bool:
    """Print whether each fitted model retrains to its committed bytes; True if all do."""
    same = True
    for kind in [model_type] if model_type else [t for t in ModelType if t.is_fitted]:
        for name, (committed, retrained) in reproduce(registry_dir, kind).items():
            verdict = "same bytes" if committed == retrained else f"DIFFERS (retrained {retrained})"
            print(f"{kind.value}/{name}: committed {committed}: {verdict}")
            same &= committed == retrained
    return same


def main(argv: list[str] | None = None) -> int:
    """``promote``, ``rollback``, ``reproduce`` (retrain and compare bytes) or ``refresh-reference``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=["promote", "rollback", "reproduce", "refresh-reference"])
    parser.add_argument(
        "--model", type=parse_model_type, default=None, help="required by promote and rollback (default: all)"
    )
    parser.add_argument("--run", default=None, help="run id (default: the newest run of the model)")
    parser.add_argument("--to", default=None, help="rollback: the history entry or run id (default: the newest)")
    add_promotion_arguments(parser)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    if args.model is None and args.action in ("promote", "rollback"):
        parser.error(f"{args.action} needs --model")
    try:
        if args.action == "refresh-reference":
            for model_type in [args.model] if args.model else list(ModelType):
                print(refresh_reference(args.registry_dir, model_type))
        elif args.action == "reproduce":
            return 0 if _reproduce_all(args.registry_dir, args.model) else 1
        elif args.action == "rollback":
            history = args.history_dir
            print(rollback(args.model, registry_dir=args.registry_dir, history_dir=history, to=args.to, keep=args.keep))
        else:
            print(promote_from_args(args.model, args.run, args))
    except (PromotionError, RefreshError, LookupError, ModelLoadError) as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
