"""Spot-price and capacity forecasting against the last value, on the shipped traces (rolling origin).

    python scripts/bench_forecast.py

Prices: the AWS V100 zones (the only shipped trace whose spot price moves: GCP's and the
32-node cluster's are constant). Capacity ("gone within the hour", at ticks with capacity):
the AWS V100 and GCP H100 zones (the 32-node trace spans half a day: no day-earlier season).
Each forecaster is fitted on a series' first half and scored on its second (see
tuner/plan/forecast.py); prints JSON with per-market means and whether each beats the baseline.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.plan import forecast  # noqa: E402
from tuner.plan.traces import aws_v100, gcp_h100  # noqa: E402

FORECASTERS = ("last_value", "seasonal_naive", "smoothing")


def main() -> None:
    report: dict[str, dict[str, Any]] = {}
    v100 = aws_v100()
    prices = [forecast.evaluate_prices(z.spot_usd_per_gpu_hour[: v100.ticks], v100.tick_s) for z in v100.zones]
    report["price_mape_pct"] = {
        "market": v100.name,
        "zones": len(prices),
        **{f: round(statistics.mean(float(p[f]) for p in prices), 3) for f in FORECASTERS},
        "alpha": [p["alpha"] for p in prices],
    }
    for market in (v100, gcp_h100()):
        zones = [forecast.evaluate_capacity(z.available[: market.ticks], market.tick_s) for z in market.zones]
        report[f"capacity_{market.name}"] = {
            f: {
                "precision": round(statistics.mean(s[f].precision for s in zones), 3),
                "recall": round(statistics.mean(s[f].recall for s in zones), 3),
                "f1": round(statistics.mean(s[f].f1 for s in zones), 3),
            }
            for f in FORECASTERS
        }
    mape = report["price_mape_pct"]
    verdict = {"price": {f: mape[f] < mape["last_value"] for f in FORECASTERS[1:]}}
    for key in [k for k in report if k.startswith("capacity_")]:
        scores = report[key]
        verdict[key] = {f: scores[f]["f1"] > scores["last_value"]["f1"] for f in FORECASTERS[1:]}
    report["beats_last_value"] = verdict
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
