"""The verdict when a method does not beat its baseline.

Every command that measures a method against a baseline (finetune vs raw pixels, distill vs
the student alone, adapt vs source-only, tta vs no adaptation, pretrain vs its starting
weights) says so in one line when the method loses: :func:`verdict` for one run,
:func:`grid_verdict` for methods x seeds. The line goes to ``metrics.json``
(``baseline_verdict``), the top of the report and the command's summary. It is a report,
never a selection. The raw-pixel baseline itself is :mod:`transferkit.transferability.pixels`.
"""

from __future__ import annotations

import numpy as np

#: How every baseline verdict starts (reports and summaries show it as is).
VERDICT = "baseline wins"


def beats(difference: float, spread: float | None = None) -> bool:
    """The rule: a method beats its baseline when ``difference = score - baseline`` exceeds ``spread``
    (the sample standard deviation over seeds of the paired differences; 0 for one run). A tie, a
    loss, or a gain within the seed spread is not a win."""
    return difference > (spread or 0.0)


def _points(difference: float, spread: float | None, seeds: int) -> str:
    if seeds > 1:
        return f"{100 * difference:+.1f} ± {100 * (spread or 0.0):.1f} points"
    return f"{100 * difference:+.1f} points"


def _runs(seeds: int) -> str:
    return f"paired over {seeds} seeds" if seeds > 1 else "one run"


def verdict(method: str, score: float | None, baseline_name: str, baseline: float | None, *,
            spread: float | None = None, seeds: int = 1, measure: str = "test accuracy",
            detail: str | None = None) -> str | None:
    """One line when ``method`` does not beat its baseline (:func:`beats` on ``score - baseline``),
    else None; None too when either figure is missing (nothing to judge). ``score``/``baseline``:
    fractions (means over ``seeds`` with ``spread`` the std of the paired differences); ``detail``:
    appended, e.g. the same comparison on validation.

    >>> verdict("distillation", 0.811, "the student alone", 0.861)  # doctest: +NORMALIZE_WHITESPACE
    'baseline wins: distillation does not beat the student alone on test accuracy
     (81.1% vs 86.1%, -5.0 points, one run)'
    """
    if score is None or baseline is None or beats(score - baseline, spread):
        return None
    line = (f"{VERDICT}: {method} does not beat {baseline_name} on {measure} ({100 * score:.1f}% vs "
            f"{100 * baseline:.1f}%, {_points(score - baseline, spread, seeds)}, {_runs(seeds)})")
    return f"{line}; {detail}" if detail else line


def compared(label: str, score: float | None, baseline: float | None) -> str | None:
    """``"label 80.0% vs 85.0%"`` (a second measure for :func:`verdict`'s ``detail``), None if one is missing."""
    if score is None or baseline is None:
        return None
    return f"{label} {100 * score:.1f}% vs {100 * baseline:.1f}% ({100 * (score - baseline):+.1f} points)"


def paired_differences(records: list[dict], key: str, name: str, baseline: str, score: str) -> list[float]:
    """``score`` of ``name`` minus ``score`` of ``baseline``, seed by seed (records: ``{key, "seed",
    score}``), over the seeds where both were scored."""
    base = {r["seed"]: r.get(score) for r in records if r[key] == baseline}
    return [r[score] - base[r["seed"]] for r in records
            if r[key] == name and r.get(score) is not None and base.get(r["seed"]) is not None]


def paired(records: list[dict], key: str, baseline: str, score: str) -> dict[str, tuple[float, float, int]]:
    """``{name: (mean, spread, seeds)}`` of each non-baseline name's :func:`paired_differences` (spread: their
    sample standard deviation, 0 for one seed); names without a paired seed are left out."""
    out = {}
    for name in dict.fromkeys(r[key] for r in records):
        diffs = paired_differences(records, key, name, baseline, score) if name != baseline else []
        if diffs:
            out[name] = (float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0, len(diffs))
    return out


def grid_verdict(records: list[dict], key: str, baseline: str, score: str, *, measure: str,
                 baseline_name: str | None = None, also: tuple[str, str] | None = None) -> str | None:
    """One line naming every method of a grid (``records``: one per method and seed) that does not
    beat ``baseline`` on ``score`` by more than the seed spread of its paired differences
    (:func:`beats`); None when all do, or when ``baseline`` is not in the line-up (nothing to judge).
    ``also``: ``(score key, label)`` of a second measure (validation) whose paired differences for
    the same methods are appended."""
    diffs = paired(records, key, baseline, score)
    losers = {n: d for n, d in diffs.items() if not beats(d[0], d[1])}
    if not losers:
        return None
    seeds = max(d[2] for d in losers.values())
    line = (f"{VERDICT}: {', '.join(losers)} {'does' if len(losers) == 1 else 'do'} not beat "
            f"{baseline_name or baseline} on {measure}{' by more than the seed spread' if seeds > 1 else ''} "
            f"({'; '.join(f'{n} {_points(*d)}' for n, d in losers.items())}, {_runs(seeds)})")
    second = paired(records, key, baseline, also[0]) if also else {}
    shown = [f"{n} {_points(*second[n])}" for n in losers if n in second]
    return f"{line}; {also[1]}: {', '.join(shown)}" if shown else line
