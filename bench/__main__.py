"""`python -m bench NAME [--runs N] [ARGS...]`: run `bench.NAME.main(ARGS)`, print its JSON.

Every benchmark module has `main(argv: Sequence[str]) -> int`, runs the same way as
`python -m bench.NAME [ARGS...]` and writes its report to ``bench/results/NAME.json``.

``--runs N`` (for the benchmarks that report legs with ratios: rabbitmq, kafka, stomp)
runs the benchmark N times in a row and writes ``bench/results/NAME-runs.json``: every
run's report and, per leg, the ratios of all runs and their median. The brokers share
the machine's cores with the bridge and the benchmark, so one run's ratio moves with the
noise of its raw legs; the median of three is the figure to judge a goal by. Legs run
side by side with another bridge (kafka: nats-kafka) get the median of `vs_nats_kafka` too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> int:
    """Run the benchmark named by argv[0], `--runs` times."""
    parser = argparse.ArgumentParser(prog="python -m bench", add_help=False)
    parser.add_argument("name")
    parser.add_argument("--runs", type=int, default=1)
    if not argv:
        print("usage: python -m bench NAME [--runs N] [ARGS...]", file=sys.stderr)
        return 2
    known, rest = parser.parse_known_args(argv)
    module = importlib.import_module(f"bench.{known.name}")
    reports = []
    for _ in range(known.runs):
        result: int = module.main(rest)
        if result != 0 or known.runs == 1:
            return result
        reports.append(json.loads((RESULTS / f"{known.name}.json").read_text()))
    summary = {"name": known.name, "runs": len(reports), "legs": medians(reports)}
    (RESULTS / f"{known.name}-runs.json").write_text(
        json.dumps({**summary, "reports": reports}, indent=1) + "\n"
    )
    print(json.dumps(summary, indent=1))
    return 0


def medians(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per leg (in order of appearance): every run's ratio and rates, and medians.

    A leg is its name, with its buffer mode and workers where the benchmark reports them
    (`rabbitmq_to_jetstream[jetstream-w2]`).
    """
    legs: dict[str, dict[str, list[float]]] = {}
    for report in reports:
        for leg in report["results"]:
            key = leg["name"]
            if "buffer" in leg:
                key += f"[{leg['buffer']}-w{leg['workers']}]"
            runs = legs.setdefault(key, {"ratio": [], "bridge": [], "raw": [], "vs": []})
            runs["ratio"].append(leg["ratio"])
            runs["bridge"].append(leg["bridge_msgs_per_s"])
            runs["raw"].append(leg["raw_msgs_per_s"])
            if "vs_nats_kafka" in leg:
                runs["vs"].append(leg["vs_nats_kafka"])
    summary: dict[str, dict[str, Any]] = {}
    for name, runs in legs.items():
        summary[name] = {
            "ratios": runs["ratio"],
            "median_ratio": round(statistics.median(runs["ratio"]), 3),
            "median_bridge_msgs_per_s": round(statistics.median(runs["bridge"])),
            "median_raw_msgs_per_s": round(statistics.median(runs["raw"])),
        }
        if runs["vs"]:
            summary[name]["vs_nats_kafka"] = runs["vs"]
            summary[name]["median_vs_nats_kafka"] = round(statistics.median(runs["vs"]), 2)
    return summary


raise SystemExit(main(sys.argv[1:]))
