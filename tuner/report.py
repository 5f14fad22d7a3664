"""``python -m tuner.report``: the spot operations report across searches.

Reads every search's cost ledger (the ``cost_ledger.csv`` artifact of its MLflow
parent run: one row per trial per node stay) and answers what a team running
searches every week asks: how often each instance type and zone is interrupted
(preemptions per node-hour, with the node-hours behind each rate), what an epoch
and a trial cost per instance type, spot vs on-demand, and a monthly projection at
the observed usage. Printed as tables, saved as one self-contained HTML page with
plots, and logged to MLflow. ``interruption_rates.csv`` feeds the adaptive
checkpoint policy (``checkpoint.observed_rates``).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from pathlib import Path
from typing import Any, Optional

import hydra
from omegaconf import DictConfig

from tuner import config as config_mod
from tuner.config import ConfigError, ReportConfig

LEDGER_ARTIFACT = "cost_ledger.csv"
RATES_CSV = "interruption_rates.csv"
DAYS_PER_MONTH = 30.0
SECONDS_PER_DAY = 86400.0
ANY_ZONE = "*"  # a type's rate over all its zones


@dataclass
class Search:
    """One search (an MLflow parent run) and its ledger rows."""

    experiment: str
    run_id: str
    start_s: float
    end_s: float
    rows: list[dict[str, Any]]

    def total(self, column: str) -> float:
        """A cost column summed over the search's ledger rows (unpriced rows count 0)."""
        return sum(float(r[column] or 0) for r in self.rows)


@dataclass
class Rate:
    instance_type: str
    zone: str
    nodes: int = 0
    node_hours: float = 0.0
    preemptions: int = 0

    @property
    def per_node_hour(self) -> float:
        return self.preemptions / self.node_hours if self.node_hours > 0 else 0.0


@dataclass
class TypeCost:
    instance_type: str
    cost_usd: float = 0.0
    on_demand_usd: float = 0.0
    epochs: int = 0
    trials: set[tuple[str, str]] = field(default_factory=set)

    @property
    def per_epoch_usd(self) -> Optional[float]:
        return self.cost_usd / self.epochs if self.epochs else None

    @property
    def per_trial_usd(self) -> Optional[float]:
        return self.cost_usd / len(self.trials) if self.trials else None


@dataclass
class Report:
    searches: list[Search]
    rates: list[Rate]  # per (type, zone), then per type over all zones (zone "*")
    costs: list[TypeCost]
    cost_usd: float
    on_demand_usd: float
    span_days: float  # the usage the projection extrapolates from
    min_node_hours: float

    @property
    def savings_pct(self) -> float:
        return 100.0 * (1.0 - self.cost_usd / self.on_demand_usd) if self.on_demand_usd > 0 else 0.0

    @property
    def monthly_usd(self) -> float:
        return self.cost_usd * DAYS_PER_MONTH / self.span_days

    @property
    def monthly_on_demand_usd(self) -> float:
        return self.on_demand_usd * DAYS_PER_MONTH / self.span_days


def _type(row: dict[str, Any]) -> str:
    """Local runs are priced as an assumed type: keep them apart from real nodes."""
    return f"{row['instance_type']} (assumed)" if str(row.get("assumed")) == "True" else row["instance_type"]


def build(searches: list[Search], min_node_hours: float, min_projection_days: float, window_days: Optional[float] = None) -> Report:
    """Aggregate ledger rows. A node's hours are its first to last second seen by any trial of its search."""
    nodes: dict[tuple[str, str], dict[str, Any]] = {}
    costs: dict[str, TypeCost] = {}
    total = on_demand = 0.0
    for search in searches:
        for row in search.rows:
            itype, start, end = _type(row), float(row["start_s"]), float(row["end_s"])
            node = nodes.setdefault((search.run_id, row["node_id"]),
                                    {"type": itype, "zone": row["zone"] or "-", "start": start, "end": end, "preempted": False})  # fmt: skip
            node["start"], node["end"] = min(node["start"], start), max(node["end"], end)
            node["preempted"] |= str(row.get("preempted")) == "True"
            c = costs.setdefault(itype, TypeCost(itype))
            c.epochs += int(row.get("epochs") or 0)
            c.trials.add((search.run_id, row["trial_id"]))
            if row.get("cost_usd") not in ("", None):
                c.cost_usd += float(row["cost_usd"])
                c.on_demand_usd += float(row["on_demand_cost_usd"])
                total += float(row["cost_usd"])
                on_demand += float(row["on_demand_cost_usd"])
    rates: dict[tuple[str, str], Rate] = {}
    for node in nodes.values():
        for zone in (node["zone"], ANY_ZONE):
            rate = rates.setdefault((node["type"], zone), Rate(node["type"], zone))
            rate.nodes += 1
            rate.node_hours += (node["end"] - node["start"]) / 3600.0
            rate.preemptions += int(node["preempted"])
    if window_days is not None:
        span_days = window_days
    else:
        starts, ends = [s.start_s for s in searches], [s.end_s for s in searches]
        span_days = (max(ends) - min(starts)) / SECONDS_PER_DAY if searches else 0.0
    return Report(
        searches, sorted(rates.values(), key=lambda r: (r.zone == ANY_ZONE, r.instance_type, r.zone)),
        sorted(costs.values(), key=lambda c: c.instance_type), total, on_demand,
        max(span_days, min_projection_days), min_node_hours,
    )  # fmt: skip


# -- reading the MLflow store ----------------------------------------------------------------------
def collect(cfg: ReportConfig) -> list[Search]:
    """Every finished search's ledger in the store (chosen experiments, time window)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from tuner.tracking import TAG_EXPERIMENT, TAG_PARENT

    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    try:
        experiments = client.search_experiments()
    except MlflowException as exc:
        raise ConfigError(f"MLflow store {cfg.tracking.tracking_uri} cannot be read: {str(exc).splitlines()[0]}") from exc
    known = {e.name: e.experiment_id for e in experiments}
    unknown = [name for name in cfg.experiments if name not in known]
    if unknown:
        raise ConfigError(f"experiments={unknown}: not in {cfg.tracking.tracking_uri} (there: {', '.join(sorted(known))})")
    ids = [known[n] for n in cfg.experiments] if cfg.experiments else list(known.values())
    names = {v: k for k, v in known.items()}
    query = f"tags.`{TAG_EXPERIMENT}` != ''"
    if cfg.since_days is not None:
        query += f" and attributes.start_time >= {int((time.time() - cfg.since_days * SECONDS_PER_DAY) * 1000)}"
    searches = []
    for run in client.search_runs(ids, filter_string=query, max_results=10000):
        if TAG_PARENT in run.data.tags:
            continue
        try:
            text = Path(client.download_artifacts(run.info.run_id, LEDGER_ARTIFACT)).read_text()
        except (MlflowException, OSError):
            continue  # a search still running, or one that never priced anything
        end_ms = run.info.end_time or int(time.time() * 1000)
        searches.append(Search(names[run.info.experiment_id], run.info.run_id, run.info.start_time / 1000.0,
                               end_ms / 1000.0, list(csv.DictReader(io.StringIO(text)))))  # fmt: skip
    return sorted(searches, key=lambda s: s.start_s)


# -- output ----------------------------------------------------------------------------------------
def _usd(value: Optional[float]) -> str:
    return "-" if value is None else f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def rate_rows(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "instance_type": r.instance_type, "zone": r.zone, "nodes": r.nodes, "node_hours": f"{r.node_hours:.3f}",
            "preemptions": r.preemptions, "per_node_hour": f"{r.per_node_hour:.4f}",
            "sample": "small" if r.node_hours < report.min_node_hours else "ok",
        }
        for r in report.rates
    ]  # fmt: skip


def cost_rows(report: Report) -> list[dict[str, Any]]:
    return [
        {
            "instance_type": c.instance_type, "trials": len(c.trials), "epochs": c.epochs, "cost": _usd(c.cost_usd),
            "on_demand": _usd(c.on_demand_usd), "per_epoch": _usd(c.per_epoch_usd), "per_trial": _usd(c.per_trial_usd),
        }
        for c in report.costs
    ]  # fmt: skip


def summary_lines(report: Report) -> list[str]:
    trials = len(set().union(*(c.trials for c in report.costs)))
    return [
        f"{len(report.searches)} searches, {trials} trials; spot {_usd(report.cost_usd)} vs on-demand "
        f"{_usd(report.on_demand_usd)}: {report.savings_pct:.1f}% saved",
        f"monthly projection at the usage of {report.span_days:.2f} days: spot {_usd(report.monthly_usd)} vs "
        f"on-demand {_usd(report.monthly_on_demand_usd)} (saves {_usd(report.monthly_on_demand_usd - report.monthly_usd)}/month)",
    ]


def plots(report: Report) -> dict[str, bytes]:
    """PNG plots: interruption rates, cumulative cost over time, savings per search."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}

    def save(name: str, fig: Any) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        out[name] = buf.getvalue()

    zoned = [r for r in report.rates if r.zone != ANY_ZONE]
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{r.instance_type}\n{r.zone}" for r in zoned]
    bars = ax.bar(labels, [r.per_node_hour for r in zoned],
                  color=["tab:orange" if r.node_hours < report.min_node_hours else "tab:blue" for r in zoned])  # fmt: skip
    for bar, r in zip(bars, zoned):
        ax.annotate(f"{r.preemptions} in {r.node_hours:.2g} h", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)  # fmt: skip
    ax.set_ylabel("preemptions per node-hour")
    ax.set_title(f"Interruption rate by instance type and zone (orange: < {report.min_node_hours:g} node-hours)")
    save("interruptions.png", fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    searches = report.searches
    times = [datetime.fromtimestamp(t) for t in [s.start_s for s in searches[:1]] + [s.end_s for s in searches]]

    def cumulative(column: str) -> list[float]:  # from 0 at the first search's start; no searches: nothing
        return list(accumulate((s.total(column) for s in searches), initial=0.0))[: len(times)]

    spot, od = cumulative("cost_usd"), cumulative("on_demand_cost_usd")
    ax.step(times, od, where="post", color="0.5", label="on-demand")
    ax.step(times, spot, where="post", color="tab:blue", label="spot (paid)")
    ax.fill_between(times, spot, od, step="post", color="tab:green", alpha=0.2, label="saved")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_title("Cost over time, by search end")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    save("cost_over_time.png", fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    names, pct = [], []
    for s in report.searches:
        c, o = s.total("cost_usd"), s.total("on_demand_cost_usd")
        names.append(f"{s.experiment}\n{s.run_id[:6]}")
        pct.append(100.0 * (1 - c / o) if o > 0 else 0.0)
    ax.bar(names, pct, color="tab:green")
    ax.axhline(report.savings_pct, color="k", linestyle="--", label=f"all searches: {report.savings_pct:.1f}%")
    ax.set_ylabel("saved vs on-demand (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Savings per search")
    ax.legend(loc="lower right")
    save("savings.png", fig)
    return out


def _html_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row.values()) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(report: Report, images: dict[str, bytes]) -> str:
    """One self-contained page: tables and plots inline (no network, no files beside it)."""
    img = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></figure>'
        for name, png in images.items()
    )
    summary = "".join(f"<p>{html.escape(line)}</p>" for line in summary_lines(report))
    style = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#eee}img{max-width:100%}")  # fmt: skip
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Spot operations report</title>"
        f"<style>{style}</style></head><body><h1>Spot operations report</h1>{summary}"
        f"<h2>Interruptions per instance type and zone</h2>{_html_table(rate_rows(report))}"
        f"<h2>Cost by instance type</h2>{_html_table(cost_rows(report))}<h2>Plots</h2>{img}</body></html>"
    )


def write_rates_csv(report: Report, path: Path) -> None:
    """The table ``checkpoint.observed_rates`` reads back (``tuner.policy.load_observed_rates``)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["instance_type", "zone", "nodes", "node_hours", "preemptions", "per_node_hour"])
        for r in report.rates:
            if not r.instance_type.endswith("(assumed)"):
                writer.writerow([r.instance_type, r.zone, r.nodes, f"{r.node_hours:.6f}", r.preemptions, f"{r.per_node_hour:.8f}"])


def log_to_mlflow(cfg: ReportConfig, report: Report, out_dir: Path) -> Optional[str]:
    from mlflow.tracking import MlflowClient

    from tuner.tracking import experiment_id

    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    run = client.create_run(experiment_id(client, cfg.tracking), run_name=f"report-{time.strftime('%Y-%m-%d_%H-%M')}")
    metrics = {"cost_usd": report.cost_usd, "on_demand_cost_usd": report.on_demand_usd, "savings_pct": report.savings_pct,
               "monthly_usd": report.monthly_usd, "monthly_on_demand_usd": report.monthly_on_demand_usd,
               "searches": float(len(report.searches))}  # fmt: skip
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    for name in ("report.html", RATES_CSV, "cost_by_type.csv"):
        client.log_artifact(run.info.run_id, str(out_dir / name))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def run_report(cfg: ReportConfig) -> Report:
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # Hydra sets INFO; matplotlib chatters at it
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    searches = collect(cfg)
    report = build(searches, cfg.min_node_hours, cfg.min_projection_days, cfg.since_days)
    from tuner.console import results_table

    print("Interruptions per instance type and zone (preemptions per node-hour):")
    print(results_table(rate_rows(report), ["instance_type", "zone", "nodes", "node_hours", "preemptions", "per_node_hour", "sample"]))
    print("\nCost by instance type:")
    print(results_table(cost_rows(report), ["instance_type", "trials", "epochs", "cost", "on_demand", "per_epoch", "per_trial"]))
    print()
    for line in summary_lines(report):
        print(line)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.html").write_text(render_html(report, plots(report)))
    write_rates_csv(report, out_dir / RATES_CSV)
    with (out_dir / "cost_by_type.csv").open("w", newline="") as f:
        rows = cost_rows(report)
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["instance_type"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"report:  {(out_dir / 'report.html').resolve()}")
    print(f"rates:   {(out_dir / RATES_CSV).resolve()}  (checkpoint.observed_rates=... feeds them to the adaptive policy)")
    if cfg.tracking.enabled:
        run_id = log_to_mlflow(cfg, report, out_dir)
        print(f"MLflow:  experiment {cfg.tracking.experiment_name!r}, run {run_id}")
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    from tuner.run import fail

    try:
        run_report(config_mod.to_settings(cfg))
    except ConfigError as exc:
        fail(str(exc))


config_mod.register()

if __name__ == "__main__":
    main()
