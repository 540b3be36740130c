"""One shape for every benchmark figure, and the files `make bench` writes.

Each scenario returns a list of `Figure`s: what was measured, the physical limit
measured in the same run (what the same work costs with PracticeCRM out of the
way), their ratio, and the target from issue #7 where there is one. `write()`
puts them in `bench/results/` as JSON (for machines) and a Markdown table (for
the README and people).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench" / "results"


@dataclass
class Figure:
    scenario: str  # "Pages", "Dispatch", "Import", "Audit", "Permissions"
    name: str  # what, for whom: "Today worklist — manager, 1 location"
    value: float  # the figure itself, in `unit`
    unit: str  # "ms p95", "msg/s", "rows/s", "s"
    limit: float | None = None  # the same work without us, in `limit_unit`
    limit_unit: str = ""
    limit_label: str = ""  # what the limit is: "its 14 SQL queries run alone"
    target: str = ""  # "p95 ≤ 150 ms" (empty: reported only)
    met: bool | None = None  # None when there is no target
    extra: dict = field(default_factory=dict)  # p50/p99, requests/s, queries, peak MB …

    @property
    def ratio(self) -> float | None:
        """Figure ÷ limit; for times >1 means slower than the limit, for rates <1."""
        if not self.limit:
            return None
        return self.value / self.limit

    def line(self) -> str:
        ratio = f"  ratio {self.ratio:.2f}" if self.ratio is not None else ""
        limit = (
            f"  limit {self.limit:,.1f} {self.limit_unit} ({self.limit_label})"
            if self.limit is not None
            else ""
        )
        target = ""
        if self.target:
            target = f"  target {self.target}: {'met' if self.met else 'MISSED'}"
        extras = "  " + ", ".join(f"{k} {v}" for k, v in self.extra.items()) if self.extra else ""
        head = f"[{self.scenario}] {self.name}: {self.value:,.1f} {self.unit}"
        return f"{head}{limit}{ratio}{target}{extras}"


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}" if value >= 10 else f"{value:,.2f}"


def markdown(figures: list[Figure], *, scale: float, started: dt.datetime) -> str:
    rows = [
        f"### `make bench` at {scale:g}× — {started:%Y-%m-%d %H:%M} UTC, "
        f"{platform.node()}, Python {platform.python_version()}",
        "",
        "| Scenario | What | Figure | Limit (same run) | Ratio | Target | Details |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        limit = f"{_fmt(f.limit)} {f.limit_unit} — {f.limit_label}" if f.limit is not None else "—"
        ratio = _fmt(f.ratio) if f.ratio is not None else "—"
        target = f"{f.target} {'✅' if f.met else '❌'}" if f.target else "—"
        details = ", ".join(f"{k} {v}" for k, v in f.extra.items())
        rows.append(
            f"| {f.scenario} | {f.name} | {_fmt(f.value)} {f.unit} | {limit} | {ratio} | "
            f"{target} | {details} |"
        )
    return "\n".join(rows) + "\n"


def write(figures: list[Figure], *, scale: float, started: dt.datetime) -> tuple[Path, Path]:
    """Write bench/results/bench-<scale>x-<time>.json and .md, and latest-<scale>x.md."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"bench-{scale:g}x-{started:%Y%m%dT%H%M}"
    data = {
        "scale": scale,
        "started": started.isoformat(),
        "host": platform.node(),
        "python": platform.python_version(),
        "figures": [asdict(f) | {"ratio": f.ratio} for f in figures],
    }
    json_path = RESULTS_DIR / f"{stem}.json"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    md = markdown(figures, scale=scale, started=started)
    md_path = RESULTS_DIR / f"{stem}.md"
    md_path.write_text(md)
    (RESULTS_DIR / f"latest-{scale:g}x.md").write_text(md)
    return json_path, md_path
