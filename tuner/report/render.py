"""The report as console tables, one self-contained HTML page with plots, and CSV files."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime
from pathlib import Path
from string import Template
from typing import Any

import pandas as pd

from tuner.report.aggregate import ANY_ZONE, RATE_COLUMNS, Report
from tuner.result_keys import COST_USD, ON_DEMAND_COST_USD, PREEMPTIONS
from tuner.text import table, usd

RATES_CSV = "interruption_rates.csv"
COSTS_CSV = "cost_by_type.csv"
PAGE = Template(
    """<!doctype html><html><head><meta charset="utf-8"><title>Spot operations report</title><style>
body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#eee}img{max-width:100%}
</style></head><body><h1>Spot operations report</h1>$summary
<h2>Interruptions per instance type and zone</h2>$rates
<h2>Cost by instance type</h2>$costs
<h2>Plots</h2>$plots</body></html>"""
)


def rate_rows(report: Report) -> pd.DataFrame:
    return report.rates.assign(
        node_hours=report.rates["node_hours"].map("{:.3f}".format),
        per_node_hour=report.rates["per_node_hour"].map("{:.4f}".format),
    )


def cost_rows(report: Report) -> pd.DataFrame:
    money = [COST_USD, "on_demand_usd", "per_unit_usd", "per_trial_usd"]
    return report.costs.assign(
        **{c: report.costs[c].map(lambda v: usd(None if pd.isna(v) else v)) for c in money},
        progress=report.costs["progress"].map("{:g}".format),
    )


def summary_lines(report: Report) -> list[str]:
    return [
        f"{len(report.searches)} searches, {report.trials} trials; spot {usd(report.cost_usd)} vs on-demand "
        f"{usd(report.on_demand_usd)}: {report.savings_pct:.1f}% saved",
        f"monthly projection at the usage of {report.span_days:.2f} days: spot {usd(report.monthly_usd)} vs "
        f"on-demand {usd(report.monthly_on_demand_usd)} "
        f"(saves {usd(report.monthly_on_demand_usd - report.monthly_usd)}/month)",
    ]


def console(report: Report) -> str:
    rates, costs = rate_rows(report), cost_rows(report)
    return "\n".join(
        [
            "Interruptions per instance type and zone (preemptions per node-hour):",
            table(rates.to_dict("records"), list(rates.columns)),
            "\nCost by instance type, per unit of training (the searches' time_attr) and per trial:",
            table(costs.to_dict("records"), list(costs.columns)),
            "",
            *summary_lines(report),
        ]
    )


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

    zoned = report.rates[report.rates["zone"] != ANY_ZONE]
    fig, ax = plt.subplots(figsize=(8, 4))
    colors = ["tab:orange" if h < report.min_node_hours else "tab:blue" for h in zoned["node_hours"]]
    bars = ax.bar(
        [f"{t}\n{z}" for t, z in zip(zoned["instance_type"], zoned["zone"])], zoned["per_node_hour"], color=colors
    )
    for bar, (n, h) in zip(bars, zip(zoned[PREEMPTIONS], zoned["node_hours"])):
        ax.annotate(
            f"{n} in {h:.2g} h",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylabel("preemptions per node-hour")
    ax.set_title(f"Interruption rate by instance type and zone (orange: < {report.min_node_hours:g} node-hours)")
    save("interruptions.png", fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    searches, per = report.searches, report.by_search
    times = [datetime.fromtimestamp(t) for t in [s.start_s for s in searches[:1]] + [s.end_s for s in searches]]
    spot = [0.0, *per[COST_USD].cumsum()][: len(times)]
    od = [0.0, *per[ON_DEMAND_COST_USD].cumsum()][: len(times)]
    ax.step(times, od, where="post", color="0.5", label="on-demand")
    ax.step(times, spot, where="post", color="tab:blue", label="spot (paid)")
    ax.fill_between(times, spot, od, step="post", color="tab:green", alpha=0.2, label="saved")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_title("Cost over time, by search end")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    save("cost_over_time.png", fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    pct = (100.0 * (1 - per[COST_USD] / per[ON_DEMAND_COST_USD].where(per[ON_DEMAND_COST_USD] > 0))).fillna(0.0)
    ax.bar([f"{s.experiment}\n{s.run_id[:6]}" for s in searches], pct, color="tab:green")
    ax.axhline(report.savings_pct, color="k", linestyle="--", label=f"all searches: {report.savings_pct:.1f}%")
    ax.set_ylabel("saved vs on-demand (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Savings per search")
    ax.legend(loc="lower right")
    save("savings.png", fig)
    return out


def page(report: Report, images: dict[str, bytes]) -> str:
    """One self-contained page: tables and plots inline (no network, no files beside it)."""
    figures = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(png).decode()}"></figure>'
        for name, png in images.items()
    )
    return PAGE.substitute(
        summary="".join(f"<p>{html.escape(line)}</p>" for line in summary_lines(report)),
        rates=rate_rows(report).to_html(index=False, border=0),
        costs=cost_rows(report).to_html(index=False, border=0),
        plots=figures,
    )


def write(report: Report, out_dir: Path) -> dict[str, Path]:
    """report.html, the rates ``checkpoint.observed_rates`` reads back, and the cost table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"html": out_dir / "report.html", "rates": out_dir / RATES_CSV, "costs": out_dir / COSTS_CSV}
    files["html"].write_text(page(report, plots(report)))
    real = report.rates[~report.rates["instance_type"].str.endswith("(assumed)")]
    real[RATE_COLUMNS].to_csv(files["rates"], index=False, float_format="%.8g")
    report.costs.to_csv(files["costs"], index=False, float_format="%.8g")
    return files
