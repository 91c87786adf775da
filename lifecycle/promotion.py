"""The champion/challenger decision, as pure functions: which scores the challenger may not lose, by how much.

Both models' answers to the same evaluation set are scored by the same scorers; each score's mean is compared. The
challenger is promoted only when, on every score the champion has, it is no more than that score's margin below the
champion (``promote.margins``, else ``promote.default_margin``). Every score here is "higher is better": the
offline scorers' shares and pass rates, and the judges' yes rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lifecycle import tags

MEAN = "/mean"
TOLERANCE = 1e-9  # float noise: an equal mean is never "worse"


@dataclass(frozen=True)
class Comparison:
    score: str
    champion: float
    challenger: float | None  # None: the challenger's scorer failed on every answer
    margin: float

    @property
    def worse(self) -> bool:
        return self.challenger is None or self.challenger < self.champion - self.margin - TOLERANCE

    def describe(self) -> str:
        if self.challenger is None:
            return f"{self.score}: the challenger has no score (champion {self.champion:.2f})"
        sign = "+" if self.challenger >= self.champion else "-"
        return (
            f"{self.score}: {self.challenger:.2f} against {self.champion:.2f} "
            f"({sign}{abs(self.challenger - self.champion):.2f}, margin {self.margin:.2f})"
        )


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    comparisons: tuple[Comparison, ...]

    @property
    def losses(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.worse]


def score_means(metrics: Mapping[str, float]) -> dict[str, float]:
    """``{"fact_agreement/mean": 0.8, ...}`` -> ``{"fact_agreement": 0.8}``, by name; other aggregates are left out.
    Sorted: MLflow lists its metrics in the order its scorer threads finished, and the verdict must read the same
    every time."""
    return {name[: -len(MEAN)]: float(metrics[name]) for name in sorted(metrics) if name.endswith(MEAN)}


def unknown_margins(margins: Mapping[str, float], scores: set[str]) -> list[str]:
    """Margins that name no score: a typo would otherwise silently leave that score at the default margin."""
    return sorted(set(margins) - scores)


def decide(
    champion: Mapping[str, float], challenger: Mapping[str, float], margins: Mapping[str, float], default_margin: float
) -> Verdict:
    """Compare the two models' mean scores (``score_means``), score by score, in the champion's order."""
    comparisons = tuple(
        Comparison(name, value, challenger.get(name), float(margins.get(name, default_margin)))
        for name, value in champion.items()
    )
    return Verdict(promoted=not any(c.worse for c in comparisons), comparisons=comparisons)


def table_rows(questions: list[str], sides: Mapping[str, tuple[str, list[str], list[Mapping]]]) -> list[dict]:
    """One row per question: the question, then per role (champion, challenger) its version's answer and scores.

    ``sides``: role -> (version, answers, per-question scores), answers and scores in the questions' order."""
    rows = []
    for index, question in enumerate(questions):
        row: dict = {"question": question}
        for role, (version, answers, per_question) in sides.items():
            row[f"{role}_version"] = version
            row[f"{role}_answer"] = answers[index]
            row.update({f"{role}/{score}": value for score, value in per_question[index].items()})
        rows.append(row)
    return rows


def chart(versions: Mapping[str, str], verdict: Verdict):
    """A matplotlib figure: each score's mean for both models, the lowest the challenger could have scored as a
    tick, and the verdict as the title."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    from matplotlib.figure import Figure

    names = [c.score for c in verdict.comparisons]
    figure = Figure(figsize=(9, 1.8 + 0.6 * len(names)))
    axes = figure.subplots()
    rows = range(len(names))
    height = 0.38
    axes.barh(
        [r - height / 2 for r in rows],
        [c.champion for c in verdict.comparisons],
        height,
        label=f"champion (version {versions['champion']})",
        color="#8c8c8c",
    )
    axes.barh(
        [r + height / 2 for r in rows],
        [c.challenger or 0.0 for c in verdict.comparisons],
        height,
        label=f"challenger (version {versions['challenger']})",
        color=["#c0392b" if c.worse else "#2e86c1" for c in verdict.comparisons],
    )
    axes.scatter(
        [c.champion - c.margin for c in verdict.comparisons],
        [r + height / 2 for r in rows],
        marker="|",
        s=400,
        color="black",
        label="lowest allowed (champion - margin)",
        zorder=3,
    )
    axes.set_yticks(list(rows), names)
    axes.invert_yaxis()
    axes.set_xlabel("mean score (higher is better)")
    axes.set_xlim(0, max([1.0, *(c.champion for c in verdict.comparisons)]) * 1.05)
    outcome = tags.Promotion.PROMOTED if verdict.promoted else tags.Promotion.REFUSED
    axes.set_title(f"challenger version {versions['challenger']} {outcome} against version {versions['champion']}")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2 - 0.6 / len(names)), ncol=3, fontsize="small")
    figure.tight_layout()
    return figure
