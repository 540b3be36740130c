"""`make bench`: every benchmark of issue #7, one table, files under bench/results/.

    make bench                 # 1×: 20 locations, 100,000 patients, 750,000 visits
    make bench SCALE=10        # 10×
    .venv/bin/python benchmarks/run.py --scale 1 --only pages,audit-browser

Two PostgreSQL databases beside the app's own (BENCH_DATABASE_URL names the
first; the second adds the scale):

- `practicecrm_bench` — scratch: the dispatch, import and audit-overhead runs
  create and delete their own rows there.
- `practicecrm_bench_<scale>x` — `manage.py generate_scale --scale N` builds it
  once (minutes) and later runs reuse it; the page, dashboard, permission and
  audit-browser runs read it.

Each scenario runs in its own Python process (Django is set up per database) and
hands back its figures; a failing scenario is reported and the others still run.
Benchmarks report, they do not pass or fail anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from benchmarks.results import Figure, markdown, write  # noqa: E402

MARK = "@@FIGURES@@"

# name → (database: "scratch" or "scale", python expression returning list[Figure])
SCENARIOS: dict[str, tuple[str, str]] = {
    "pages": ("scale", "__import__('benchmarks.pages', fromlist=['run']).run(SCALE)"),
    "dashboard": ("scale", "__import__('benchmarks.dashboard', fromlist=['run']).run(SCALE)"),
    "audit-browser": ("scale", "__import__('benchmarks.audit', fromlist=['browser']).browser()"),
    "dispatch": ("scratch", "__import__('benchmarks.dispatch', fromlist=['run']).run()"),
    "import": ("scratch", "__import__('benchmarks.imports', fromlist=['run']).run()"),
    "audit-overhead": (
        "scratch",
        "__import__('benchmarks.audit', fromlist=['overhead']).run_overhead()",
    ),
}


def scale_url(base: str, scale: float) -> str:
    parts = urlsplit(base)
    name = parts.path.lstrip("/") + f"_{scale:g}x".replace(".", "_")
    return parts._replace(path="/" + name).geturl()


def ensure_scale_data(url: str, scale: float, seed: int) -> None:
    """Build the scale database unless it already holds this scale's data."""
    from benchmarks.common import ensure_database

    ensure_database(url)
    import psycopg

    expected = round(100_000 * scale)
    try:
        with psycopg.connect(url) as conn:
            have = conn.execute("SELECT count(*) FROM patients_patient").fetchone()[0]
    except psycopg.Error:
        have = 0
    env = {**os.environ, "DATABASE_URL": url}
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    # Always: a reused data set gets the indexes of migrations added since it was built.
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=BASE_DIR)
    if have == expected:
        print(f"Scale data: {url.rsplit('/', 1)[-1]} already holds {have:,} patients (reused)")
        return
    subprocess.run(
        [*manage, "generate_scale", "--scale", f"{scale:g}", "--seed", str(seed), "--replace"],
        env=env,
        check=True,
        cwd=BASE_DIR,
    )


def run_scenario(name: str, url: str, scale: float) -> list[Figure]:
    _, expression = SCENARIOS[name]
    code = (
        "import dataclasses, json\n"
        f"SCALE = {scale!r}\n"
        f"figures = {expression}\n"
        f"print({MARK!r} + json.dumps([dataclasses.asdict(f) for f in figures], default=str))\n"
    )
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(BASE_DIR)}
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=BASE_DIR, stdout=subprocess.PIPE, text=True
    )
    figures: list[Figure] = []
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(MARK):
            figures = [Figure(**item) for item in json.loads(line[len(MARK) :])]
        else:
            print("  " + line, end="", flush=True)
    if process.wait() != 0:
        print(f"  !! {name} failed (exit {process.returncode}); see its output above")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", "1")))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", default="", help="comma-separated: " + ", ".join(SCENARIOS))
    args = parser.parse_args()
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")

    base = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/practicecrm_bench"
    )
    scratch, scaled = base, scale_url(base, args.scale)
    started = dt.datetime.now(dt.UTC)
    clock = time.perf_counter()
    if any(SCENARIOS[name][0] == "scale" for name in chosen):
        ensure_scale_data(scaled, args.scale, args.seed)

    figures: list[Figure] = []
    for name in chosen:
        url = scaled if SCENARIOS[name][0] == "scale" else scratch
        print(f"\n== {name} ({url.rsplit('/', 1)[-1]}) ==", flush=True)
        t0 = time.perf_counter()
        got = run_scenario(name, url, args.scale)
        for figure in got:
            print("  " + figure.line())
        print(f"  ({time.perf_counter() - t0:.0f} s)")
        figures += got

    json_path, md_path = write(figures, scale=args.scale, started=started)
    print()
    print(markdown(figures, scale=args.scale, started=started))
    print(f"Written {json_path.relative_to(BASE_DIR)} and {md_path.relative_to(BASE_DIR)}")
    print(f"make bench took {(time.perf_counter() - clock) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
