"""Online comparison of two model versions (champion / challenger) on what users said and what they got.

Per version: thumbs up/down from the feedback store (each rating is attributed to the version that answered),
the share of ups with its 95% Wilson interval; from the version's MLflow traces (tagged `model_version`): the
answers given, block and abstention rates, and latency (p50/p95 of the traces' durations).

The verdict (`verdict`) is decided on the ratings alone, by a two-sided two-proportion z-test at 5%:
- both versions need at least `min_ratings` ratings (default 30), else "not yet distinguishable";
- z = (p_challenger - p_champion) / sqrt(p(1-p)(1/n_challenger + 1/n_champion)), p the pooled up-share;
- |z| >= 1.96: the challenger is "better" (z > 0) or "worse" (z < 0); otherwise "not yet distinguishable".
The Wilson intervals are shown beside it; they are not the rule (two overlapping 95% intervals can still differ
significantly). The promotion gate (`gate.EvaluationGate`) refuses to promote a version to Production when this
verdict says it is worse than the current Production version, unless forced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

Z_95 = 1.959964
MIN_RATINGS = 30


def wilson(up: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of the share `up / n` ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = up / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def z_score(up_a: int, n_a: int, up_b: int, n_b: int) -> float:
    """Two-proportion z statistic of b's up-share minus a's (pooled variance); 0 when undefined."""
    if n_a <= 0 or n_b <= 0:
        return 0.0
    pooled = (up_a + up_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    return 0.0 if se == 0 else (up_b / n_b - up_a / n_a) / se


@dataclass
class VersionStats:
    """What one version did online."""

    version: str
    role: str = ""
    up: int = 0
    down: int = 0
    answers: int | None = None  # traces found (None: traces not read)
    blocked: int = 0
    abstained: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def ratings(self) -> int:
        return self.up + self.down

    @property
    def up_share(self) -> float | None:
        return self.up / self.ratings if self.ratings else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.up, self.ratings)

    def rate(self, count: int) -> float | None:
        return count / self.answers if self.answers else None

    def latency(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Verdict:
    outcome: str  # "better", "worse" or "not yet distinguishable"
    z: float
    reason: str


def verdict(champion: VersionStats, challenger: VersionStats, min_ratings: int = MIN_RATINGS) -> Verdict:
    """Is the challenger's up-share better, worse, or not yet distinguishable from the champion's (rule above)."""
    z = z_score(champion.up, champion.ratings, challenger.up, challenger.ratings)
    short = [s for s in (champion, challenger) if s.ratings < min_ratings]
    if short:
        need = ", ".join(f"version {s.version} has {s.ratings}" for s in short)
        return Verdict("not yet distinguishable", z, f"each version needs {min_ratings} ratings ({need})")
    if abs(z) < Z_95:
        return Verdict("not yet distinguishable", z, f"|z| = {abs(z):.2f} < 1.96 (no significant difference at 5%)")
    outcome = "better" if z > 0 else "worse"
    return Verdict(outcome, z, f"z = {z:+.2f}: the challenger's up-share is significantly {'higher' if z > 0 else 'lower'}"
                               " (two-proportion z-test, 5%, two-sided)")


def rating_counts(store, version: str) -> tuple[int, int]:
    """(up, down) ratings the feedback store holds for `version`."""
    by_version = store.stats()["by_version"].get(str(version)) or {}
    return int(by_version.get("up", 0)), int(by_version.get("down", 0))


def read_traces(stats: VersionStats, client, experiment_ids: list[str], max_traces: int = 5000) -> None:
    """Fill answers, blocked, abstained and latencies from the version's newest traces (at most `max_traces`)."""
    token, seen = None, 0
    stats.answers = 0
    while seen < max_traces:
        page = client.search_traces(experiment_ids=experiment_ids, include_spans=False, page_token=token,
                                    filter_string=f"tags.model_version = '{stats.version}'",
                                    max_results=min(500, max_traces - seen), order_by=["timestamp_ms DESC"])
        for trace in page:
            info = trace.info
            tags = info.tags or {}
            stats.answers += 1
            stats.blocked += tags.get("blocked") == "true"
            stats.abstained += tags.get("abstained") == "true"
            if info.execution_duration is not None:
                stats.latencies_ms.append(float(info.execution_duration))
        seen += len(page)
        token = page.token
        if not token or not len(page):
            break


def version_stats(store, version: str, role: str = "", *, client=None, experiment_ids: list[str] | None = None,
                  max_traces: int = 5000) -> VersionStats:
    """Ratings of `version`, and its traces when a client and experiments are given."""
    up, down = rating_counts(store, version)
    stats = VersionStats(str(version), role, up, down)
    if client is not None and experiment_ids:
        read_traces(stats, client, experiment_ids, max_traces)
    return stats


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def table(rows: list[VersionStats]) -> list[str]:
    """The side-by-side lines `feedback compare` prints."""
    lines = [f"{'version':>8} {'role':10} {'up':>6} {'down':>6} {'up share [95% Wilson]':>24} {'answers':>8} "
             f"{'blocked':>8} {'abstained':>9} {'p50 ms':>8} {'p95 ms':>8}"]
    for s in rows:
        lo, hi = s.interval
        share = f"{_pct(s.up_share)} [{100 * lo:.0f}-{100 * hi:.0f}%]" if s.ratings else "-"
        p50, p95 = s.latency(0.5), s.latency(0.95)
        lines.append(f"{s.version:>8} {s.role:10} {s.up:>6} {s.down:>6} {share:>24} "
                     f"{'-' if s.answers is None else s.answers:>8} {_pct(s.rate(s.blocked)):>8} "
                     f"{_pct(s.rate(s.abstained)):>9} {'-' if p50 is None else f'{p50:.0f}':>8} "
                     f"{'-' if p95 is None else f'{p95:.0f}':>8}")
    return lines
