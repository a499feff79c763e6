"""research/EXPERIMENTS_JOURNEY.md, written from the results: the story, the numbers, and what is noise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ml_production_service.configs import ModelType
from ml_production_service.features import FEATURE_NAMES
from research.experiments.comparison import Comparison
from research.experiments.experiment import Run
from research.experiments.results import (
    AblationRecord,
    AblationVariant,
    NestedCvRecord,
    RepeatedCvRecord,
    headline,
    seed_spread_text,
)
from research.experiments.stats import corrected_paired_test
from research.experiments.text import comparison_cells, interval, mean_std, microseconds, p_value, pct, size, table

STEPS = {
    ModelType.HEURISTIC: (
        "The baseline: two petal thresholds",
        "Rules first: if a person with a ruler does as well, no model is needed. The thresholds were read off "
        "these same 150 rows, and nothing is refitted inside a fold, so every number below is in-sample: an "
        "upper bound on what the rules would do on new flowers, not a validation.",
    ),
    ModelType.DECISION_TREE: (
        "A single decision tree",
        "The smallest fitted model: one tree over the eight engineered features, depth 4. Each fold refits it, so "
        "from here on the numbers are out-of-sample.",
    ),
    ModelType.RANDOM_FOREST: (
        "A random forest",
        "Averaging 100 trees lowers the variance of one tree. Bagging also gives a free estimate: each tree is "
        "scored on the rows its bootstrap left out (OOB).",
    ),
    ModelType.XGBOOST: (
        "Gradient boosting (XGBoost)",
        "Boosting fits trees to the errors of the previous ones. The recipe uses a fixed 100 rounds with no early "
        "stopping, so the promoted model is fitted exactly as it was validated (the original service validated "
        "one recipe and shipped another, stopped early on a split no validation saw).",
    ),
}


def step(model_type: ModelType) -> tuple[str, str]:
    """The journey's title and introduction of a model type; LookupError saying where to add a new one."""
    try:
        return STEPS[model_type]
    except KeyError:
        raise LookupError(
            f"the journey has no step for model type {model_type.value!r}: add its title and introduction to "
            "research.experiments.journey.STEPS (CLAUDE.md, recipe: a predictor)"
        ) from None


def _link(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def _step(run: Run, base: Path) -> list[str]:
    m = run.record
    loocv, repeated, protocol = m.loocv, m.repeated_cv, m.protocol
    title, intro = step(run.model_type)
    top = headline(m)
    wrong = ", ".join(f"{w.row_id} ({w.true}→{w.predicted})" for w in loocv.misclassified) or "none"
    lines = [
        f"### {title} (`{run.model_type.value}`, run [{run.run_id}]({_link(run.directory / 'report.md', base)}))",
        "",
        intro,
        "",
        f"- Leave-one-out: **{pct(loocv.accuracy)}** ({loocv.correct}/{loocv.rows}; Wilson 95% "
        f"{interval(loocv.accuracy_ci95)}), macro F1 {loocv.macro_f1:.3f}. Wrong rows: {wrong}.",
        f"- Headline: **{top.text()}**: {top.why}. Over other fold seeds: {seed_spread_text(m)}.",
        f"- {protocol.repeats}x{protocol.folds}-fold: "
        f"**{mean_std(repeated.accuracy_mean, repeated.accuracy_std)}** (mean ± sd of "
        f"{len(repeated.fold_accuracy)} folds of {round(m.data.rows / protocol.folds)} rows; "
        f"corrected 95% interval of the mean {interval(repeated.accuracy_ci95)}).",
    ]
    if m.oob:
        gap = m.oob.accuracy - loocv.accuracy
        lines.append(
            f"- Out-of-bag: {pct(m.oob.accuracy)}, {100 * abs(gap):.1f} points "
            f"{'above' if gap > 0 else 'below' if gap < 0 else 'equal to'} leave-one-out: "
            f"{'the same' if abs(gap) < 1e-12 else 'a different'} measurement of the same model, "
            "not a better or worse model."
        )
    if m.nested_cv:
        lines.append(_tuning_line(m.nested_cv, repeated))
    elif not run.model_type.is_fitted:
        lines.append(
            "- No nested CV: nothing is searched inside a fold. An honest estimate would need the thresholds "
            "learned from the training rows of each fold, which the hand-set rules cannot do."
        )
    files = ", ".join(f"{k} {size(v)}" for k, v in m.serving.artifact_bytes.items())
    lines.append(
        f"- Serving cost, measured: one row {microseconds(m.serving.served.single_row_us_median)}, 1000 rows "
        f"{m.serving.served.batch_1000_ms_median:.2f} ms; files {files}."
    )
    return [*lines, ""]


def _tuning_line(n: NestedCvRecord, repeated: RepeatedCvRecord) -> str:
    fixed = np.asarray(repeated.fold_accuracy[: n.outer_folds])
    test = corrected_paired_test(np.asarray(n.fold_accuracy), fixed, n.test_train_ratio)
    chosen = {str(sorted(c.items())) for c in n.chosen_params}
    verdict = (
        "within noise: searching the grid buys nothing measurable, so the fixed recipe stays"
        if test.within_noise
        else ("tuning helps beyond noise" if test.difference > 0 else "the fixed recipe is better beyond noise")
    )
    search = f"{n.outer_folds} outer x {n.inner_folds} inner folds, grid {json.dumps(n.grid)}"
    paired = f"{100 * test.difference:+.1f} points, 95% {_points(test.interval)}, p {p_value(test.p_value)}"
    unnested = f"{pct(n.non_nested_best_score)} ({json.dumps(n.non_nested_best_params)})"
    return (
        f"- Tuning, honestly measured: nested CV ({search}) scores {pct(n.accuracy_mean)} against the fixed "
        f"recipe's {pct(float(fixed.mean()))} on the same {n.outer_folds} outer folds: {paired}; {verdict}. "
        f"The outer folds chose {len(chosen)} different settings. Quoting the best inner score of a search on all "
        f"rows, as an unnested report would, claims {unnested}."
    )


def _points(bounds: tuple[float, float]) -> str:
    return f"[{100 * bounds[0]:+.1f}, {100 * bounds[1]:+.1f}] points"


def _conclusions(latest: dict[ModelType, Run], pairs: list[Comparison]) -> list[str]:
    fitted = {t: r for t, r in latest.items() if t.is_fitted}
    if not fitted:
        return ["- No fitted model has been run yet."]
    score = {t: r.record.repeated_cv.accuracy_mean for t, r in fitted.items()}
    best = max(score, key=lambda t: score[t])
    tied = [best]
    for pair in pairs:
        types = {pair.a.model_type, pair.b.model_type}
        if best in types and ModelType.HEURISTIC not in types and pair.folds.within_noise:
            tied += [t for t in types if t is not best]
    others = ", ".join(f"`{t.value}` ({pct(score[t])})" for t in sorted(tied[1:], key=lambda t: -score[t]))
    lines = [
        f"- Highest mean on the shared folds: `{best.value}` ({pct(score[best])}). Within noise of it (corrected "
        f"paired t-test on the same folds, 95%): {others}; the ranking among them is not a finding."
        if others
        else f"- `{best.value}` ({pct(score[best])}) is ahead of every other fitted model beyond noise.",
    ]
    batch = {t: fitted[t].record.serving.served.batch_1000_ms_median for t in tied}
    single = [fitted[t].record.serving.served.single_row_us_median for t in tied]
    files = {t: sum(fitted[t].record.serving.model_bytes.values()) for t in tied}
    cheapest = min(tied, key=lambda t: (files[t], batch[t]))
    if len(tied) > 1:
        readable = (
            " It is also readable: its whole tree is drawn in its run's figures."
            if cheapest is ModelType.DECISION_TREE
            else ""
        )
        costs = ", ".join(f"`{t.value}` {size(files[t])} and 1000 rows in {batch[t]:.2f} ms" for t in tied)
        lines.append(
            f"- With accuracy tied, cost decides. On the served (ONNX) path one row takes {microseconds(min(single))} "
            f"to {microseconds(max(single))} for all of them; they differ in artifact size and batch time: {costs}. "
            f"The smallest is `{cheapest.value}`.{readable}"
        )
    heuristic = latest.get(ModelType.HEURISTIC)
    if heuristic is not None:
        against = [p for p in pairs if ModelType.HEURISTIC in {p.a.model_type, p.b.model_type}]
        noise = all(p.folds.within_noise for p in against)
        lines.append(
            f"- The heuristic scores {pct(heuristic.record.repeated_cv.accuracy_mean)}, in-sample; "
            + (
                "no fitted model differs from it beyond noise. The fitted models earn their place by being learned "
                "from data (retrained by a command, validated out-of-sample), not by a measurable accuracy gain."
                if noise
                else "some differences to the fitted models are beyond noise (see the table)."
            )
        )
    halves = [
        (r.record.repeated_cv.accuracy_ci95[1] - r.record.repeated_cv.accuracy_ci95[0]) / 2 for r in latest.values()
    ]
    rows = next(iter(latest.values())).record.data.rows
    lines += [
        "- Leave-one-out and repeated k-fold are two measurements of the same recipe; a gap between them is a "
        f"difference of measurement, not an improvement of the model. With {rows} rows one row is "
        f"{100 / rows:.2f} points, and the 95% intervals of the fold means are ±{100 * min(halves):.1f} to "
        f"±{100 * max(halves):.1f} points wide: differences smaller than that are noise.",
        "- Every promoted model is the validated recipe fitted on all rows (rebuilding its manifest's recipe "
        "reproduces its predictions, checked in every run), so the validation numbers describe the artifact that "
        "serves.",
    ]
    return lines


def render_journey(runs: list[Run], latest: dict[ModelType, Run], pairs: list[Comparison], base: Path) -> str:
    """The whole journey page; links are relative to ``base``, the folder the page is written to."""
    if not latest:
        return "# Experiments journey\n\nNo runs yet: `make run-all-experiments`.\n"
    first = next(iter(latest.values())).record
    protocol = first.protocol
    lines = [
        "# Experiments journey",
        "",
        "<!-- Generated by `make research-report` from research/results/*/metrics.json. Do not edit by hand. -->",
        "",
        f"Generated from {len(runs)} run(s) in `research/results/`; every number below is read from a run's "
        "`metrics.json`, and re-running `make run-all-experiments` rewrites this page.",
        "",
        "## The question and the protocol",
        "",
        "Which classifier should serve iris predictions, and how sure can we be that one is better than another? "
        f"Every model sees the same {first.data.rows} rows (sha256 `{first.data.sha256[:16]}…`) and the "
        f"same protocol: leave-one-out CV (one out-of-sample prediction per row, so models can be compared row by "
        f"row with McNemar's test), repeated stratified {protocol.folds}-fold x {protocol.repeats} with seed "
        f"{protocol.seed} (the same {protocol.folds * protocol.repeats} folds for every model, so differences "
        "are paired fold by fold), out-of-bag where the model bags, and nested CV where a grid is searched. Intervals "
        "are 95%: Wilson for leave-one-out accuracy; for the fold means, the Nadeau-Bengio corrected resampled t "
        "interval, because overlapping training sets make fold scores correlated and a naive standard error too small.",
        "",
        "## The steps",
        "",
    ]
    for run in latest.values():
        lines += _step(run, base)
    lines += [
        "## Are the differences real?",
        "",
        "Paired on the same folds (difference of means, corrected 95% interval, p) and on the same rows "
        "(leave-one-out: rows only one of the two gets right, exact McNemar p).",
        "",
        table(
            ["a − b", "10×10 difference [95% CI]", "p", "LOOCV rows only a / only b right", "McNemar p", "verdict"],
            [
                comparison_cells(
                    p,
                    f"`{p.a.model_type.value}` − `{p.b.model_type.value}`",
                    _points(p.folds.interval).removesuffix(" points"),
                )
                for p in pairs
            ],
        ),
        "",
        f"![Fold accuracies of every model]({_link(runs[0].directory.parent / 'summary' / 'cv_scores.png', base)})",
        "",
        *_features(latest),
        "## The hard rows",
        "",
        *_hard_rows(latest),
        "",
        "## Conclusions",
        "",
        *_conclusions(latest, pairs),
        "",
        "## Every run",
        "",
        "Code is the git commit the run started from; `+` marks uncommitted changes at the time (each run's "
        "`metrics.json` also holds a sha256 of the code on disk).",
        "",
        table(
            ["run", "model", "parameters", "10×10 mean", "LOOCV", "code"],
            [
                [
                    f"[{r.run_id}]({_link(r.directory / 'report.md', base)})",
                    r.model_type.value,
                    _short_params(r),
                    pct(r.record.repeated_cv.accuracy_mean),
                    pct(r.record.loocv.accuracy),
                    _code(r),
                ]
                for r in runs
            ],
        ),
        "",
    ]
    return "\n".join(lines)


def _hard_rows(latest: dict[ModelType, Run]) -> list[str]:
    wrong = {t: {w.row_id: w for w in r.record.loocv.misclassified} for t, r in latest.items()}
    fitted = [t for t in wrong if t.is_fitted]
    every_row = sorted(set().union(*wrong.values()))
    if not every_row:
        return ["Every model gets every row right under leave-one-out."]
    rows = []
    for row_id in every_row:
        sample = next(w[row_id] for w in wrong.values() if row_id in w)
        rows.append([row_id, sample.true, *["✗" if row_id in wrong[t] else "" for t in wrong]])
    shared = sorted(set.intersection(*(set(wrong[t]) for t in fitted))) if fitted else []
    confusions = {frozenset((w.true, w.predicted)) for model in wrong.values() for w in model.values()}
    where = (
        f"Every error confuses {' and '.join(sorted(next(iter(confusions))))}. "
        if len(confusions) == 1
        else f"The errors confuse {len(confusions)} different pairs of classes. "
    )
    return [
        f"Rows that a model misclassifies under leave-one-out (0-based `load_iris()` row ids). {where}Rows that every "
        f"fitted model gets wrong are a property of the data, not of a model: {', '.join(map(str, shared)) or 'none'}.",
        "",
        table(["row", "true class", *[f"`{t.value}`" for t in wrong]], rows),
    ]


def _code(run: Run) -> str:
    code = run.record.code
    return f"`{(code.git_commit or 'unknown')[:8]}`{'+' if code.git_dirty else ''}"


def _short_params(run: Run) -> str:
    if not run.model_type.is_fitted:
        return "thresholds in code"
    defaults_free = {k: v for k, v in run.record.parameters.items() if k in _KEY_PARAMS}
    return f"{run.record.config.estimator} " + ", ".join(f"{k}={v}" for k, v in sorted(defaults_free.items()))


_KEY_PARAMS = {"max_depth", "min_samples_leaf", "n_estimators", "learning_rate", "max_features", "criterion"}


def _features(latest: dict[ModelType, Run]) -> list[str]:
    """Which features earn their place: every ablation of every fitted model, and a recommendation per row."""
    ablated = {t: a for t, r in latest.items() if (a := r.record.ablation) is not None}
    if not ablated:
        return []
    names = [v.name for v in next(iter(ablated.values())).variants]
    cost = next(iter(ablated.values())).cost
    rows = []
    for name in names:
        found = {t: next(v for v in a.variants if v.name == name) for t, a in ablated.items()}
        cells = [f"{100 * v.difference:+.1f} {interval(v.difference_ci95)}" for v in found.values()]
        ns = cost.ns_per_row.get(name)
        rows.append([f"`{name}`", *cells, "—" if ns is None else f"{ns:.2f} ns", _recommend(name, found)])
    protocol = next(iter(latest.values())).record.protocol
    return [
        "## Which features earn their place",
        "",
        f"Drop-one ablation on the same {protocol.repeats}×{protocol.folds} folds as each model's full recipe: "
        "accuracy without the feature minus accuracy with it, in points, with the corrected 95% interval (below "
        "zero beyond noise means the model needs it). A raw column dropped alone leaves the features derived from "
        "it in place; `+ derived` drops the measurement entirely. Cost: time per row to compute the column, on "
        f"this machine (the whole transform: {cost.transform_ns_per_row:.1f} ns per row). The served feature set "
        "is unchanged by this page: changing it retrains every model (see CLAUDE.md, recipe: a feature).",
        "",
        table(["dropped", *[f"`{t.value}`" for t in ablated], "cost per row", "recommendation"], rows),
        "",
        *_feature_summary(ablated),
        "",
    ]


def _feature_summary(ablated: dict[ModelType, AblationRecord]) -> list[str]:
    """Which columns earn their place, how many intervals could exclude zero by chance, and what to do next."""
    variants = [v for a in ablated.values() for v in a.variants]
    needed = sorted({v.name for v in variants if v.kind == "feature" and v.difference_ci95[1] < 0})
    harmful = sorted({v.name for v in variants if v.kind == "feature" and v.difference_ci95[0] > 0})
    engineered = [v for v in variants if v.kind == "engineered"]
    engineering_helps = any(v.difference_ci95[1] < 0 for v in engineered)
    lines = [
        "- Earn their place (some model loses accuracy without the column beyond noise): "
        + (", ".join(f"`{n}`" for n in needed) or "no single column")
        + "; better dropped (some model gains beyond noise): "
        + (", ".join(f"`{n}`" for n in harmful) or "none")
        + f". These are {len(variants)} intervals at 95%: about {0.05 * len(variants):.0f} would exclude zero by "
        "chance alone, so one such interval near zero is weak evidence.",
        "- Engineering as a whole: "
        + (
            "the four raw measurements alone lose accuracy beyond noise for "
            + ", ".join(
                f"`{t.value}`"
                for t, a in ablated.items()
                for v in a.variants
                if v.kind == "engineered" and v.difference_ci95[1] < 0
            )
            + ", so the engineered features earn their place there."
            if engineering_helps
            else "every model scores within noise of its full recipe on the four raw measurements alone. "
            "Recommendation: keep the served feature set (changing it retrains and re-promotes every model for no "
            "measured gain), and when the models are next retrained for another reason, try the raw-only recipe as "
            "the candidate and let the gate decide."
        ),
    ]
    return lines


def _recommend(name: str, found: dict[ModelType, AblationVariant]) -> str:
    """keep when some model needs it, drop when every model is better without it, otherwise what justifies it."""
    needs = [t.value for t, v in found.items() if v.difference_ci95[1] < 0]
    if needs:
        return "keep: without it, " + ", ".join(f"`{n}`" for n in needs) + " loses accuracy beyond noise"
    if all(v.difference_ci95[0] > 0 for v in found.values()):
        return "drop: every model is better without it beyond noise"
    if name in FEATURE_NAMES or name.endswith("+ derived"):
        return "justify: no model needs it measurably; it is a measurement every request carries"
    if name == "every engineered feature":
        return "justify: the four raw measurements alone are as accurate within noise; engineering is unproven here"
    return "justify or drop: within noise for every model; a candidate to remove at the next retrain"
