"""Peak memory of the demo's ICU run under two versions of the code, side by side.

Each version's `src/` is taken from git (`git archive`), and the demo's ICU run (its
subjects, settings and end-of-run audit, `demo.icu_settings`) runs once under each, at the
same time, one thread each, so that both see the same machine. Reports each run's peak
RSS (the kernel's, from wait4), wall time, and the head/base ratio; an RSS timeline
sampled every second goes to the JSON.

    OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/peak_rss_ab.py \
        --planted runs/demo/planted --base HEAD~1 --head HEAD --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FORGET = "lm-extraction:ids=1670,13379,10234,4719"  # the demo's forget set


def _snapshot(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, capture_output=True)
    if archive.returncode:
        sys.exit(f"peak_rss_ab: git archive {rev} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--planted", required=True, help="the demo's planted model folder")
    parser.add_argument("--base", default="HEAD~1")
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "peak_rss_ab"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from icu_unlearn.demo import DemoSettings, icu_settings

    work = Path(tempfile.mkdtemp(prefix="peak-rss-"))
    procs = {}
    for name, rev in (("base", args.base), ("head", args.head)):
        src = _snapshot(rev, work / name)
        sets = icu_settings(DemoSettings(), args.planted, FORGET, work / f"{name}-run")
        sets.append(f"max_epochs={args.epochs}")
        command = [sys.executable, "-m", "icu_unlearn", "run"]
        command += [a for s in sets for a in ("--set", s)]
        env = os.environ | {"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
        log = (work / f"{name}.log").open("w")
        procs[name] = (subprocess.Popen(command, env=env, stdout=log, stderr=log), time.time())
    timeline = {name: [] for name in procs}
    results = {}
    while len(results) < len(procs):
        for name, (proc, started) in procs.items():
            if name in results:
                continue
            rss = _rss_mb(proc.pid)
            if rss is not None:
                timeline[name].append((round(time.time() - started, 1), round(rss)))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                results[name] = {
                    "rev": getattr(args, name),
                    "commit": subprocess.run(
                        ["git", "rev-parse", "--short", getattr(args, name)],
                        cwd=ROOT, capture_output=True, text=True,
                    ).stdout.strip(),
                    "exit": os.waitstatus_to_exitcode(status),
                    "peak_rss_mb": round(usage.ru_maxrss / 1024),
                    "wall_s": round(time.time() - started, 1),
                }  # fmt: skip
        time.sleep(1)
    for name, r in results.items():
        if r["exit"] not in (0, 3):  # 3: the few epochs asked for left some sequence not done
            sys.exit(f"peak_rss_ab: the {name} run failed (exit {r['exit']}); see {work}")
    ratio = results["head"]["peak_rss_mb"] / results["base"]["peak_rss_mb"]
    command = (
        "OMP_NUM_THREADS=1 ICU_DATA_DIR=../shared/data .venv/bin/python benchmarks/peak_rss_ab.py "
        f"--planted {args.planted} --base {args.base} --head {args.head} --epochs {args.epochs}"
    )
    out = Path(args.out)
    out.with_suffix(".json").write_text(
        json.dumps({"command": command, "results": results, "timeline": timeline}, indent=1)
    )
    lines = [
        "# Peak RSS of the demo's ICU run: two versions side by side",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {platform.system()}, CPU only, one thread a run, "
        "both runs at once",
        "",
        "| version | commit | exit | peak RSS MB | wall s |",
        "|---|---|---|---|---|",
        *(
            f"| {n} ({r['rev']}) | {r['commit']} | {r['exit']} | {r['peak_rss_mb']} | {r['wall_s']} |"
            for n, r in results.items()
        ),
        "",
        f"head / base peak RSS: {ratio:.2f}",
        "",
    ]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
