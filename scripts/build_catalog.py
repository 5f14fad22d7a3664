"""Rebuild tuner/catalog/prices.csv from the public price data in shared/data/spot/prices/.

    python scripts/build_catalog.py [--shared ../shared]

One row per instance type, region and zone: AWS GPU list prices with a spot price
per availability-zone ID (SkyPilot's catalog of the AWS price list), and GCP
a3-highgpu-8g spot/on-demand per region (SkyNomad artifact). Values are copied,
never edited; an empty spot price stays empty (unpriced, not $0).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tuner" / "catalog" / "prices.csv"
COLUMNS = [
    "provider",
    "instance_type",
    "region",
    "zone",
    "gpus",
    "vcpus",
    "on_demand_usd_per_hour",
    "spot_usd_per_hour",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parent.parent.parent / "shared"))
    prices = Path(parser.parse_args().shared) / "data" / "spot" / "prices"
    rows = []
    with (prices / "aws-gpu-prices.csv").open() as f:
        for r in csv.DictReader(f):
            rows.append(
                [
                    "aws",
                    r["instance_type"],
                    r["region"],
                    r["availability_zone"],
                    r["accelerator_count"],
                    r["vcpus"],
                    r["on_demand_usd_per_hour"],
                    r["spot_usd_per_hour"],
                ]
            )
    for path in sorted((prices / "gcp-a3-highgpu-8g").glob("*.json")):
        doc = json.loads(path.read_text())
        billed = {c["label"]: c["quantity"] for c in doc["components"]}  # cpu and gpu counts as billed
        rows.append(
            [
                "gcp",
                doc["machine_type"],
                doc["region"],
                "",
                billed["gpu"],
                billed["cpu"],
                doc["on_demand_price"],
                doc["price"],
            ]
        )
    with OUT.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
