"""Overhead: the platform against plain Ray Tune + OptunaSearch on the same search and seed.

    python scripts/bench_overhead.py [--repeats 3] [--trials 8] [--epochs 20]

Both run on one local Ray cluster (started once), alternating, `--repeats` times each:
- plain: a function trainable that trains the same model (``workloads.classify.Trial``)
  and reports every epoch with a checkpoint; Tune's own OptunaSearch (the same TPE
  sampler and seed) and ASHA; no callbacks.
- platform: ``tuner.run.driver.execute``: the built-in trainer through ``tuner.session``
  (drain watcher, heartbeats, checkpoints with manifests), the platform's searcher, the
  cost ledger, progress lines, the liveness watchdog and MLflow tracking (one sqlite
  store, its tables created once beforehand, untimed).
Each wall time covers connecting to the cluster, the search and the summary. Prints
JSON with the median of each and the median ratio over repeats in which both trained the same
number of epochs (target <= 1.05).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray.cluster_utils import Cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlflow.tracking import MlflowClient  # noqa: E402

from tests.tooling.searches import experiment  # noqa: E402
from tuner.config import ClusterConfig, Config, TrackingConfig  # noqa: E402
from tuner.run.build import load_space, scheduler  # noqa: E402
from tuner.run.driver import execute  # noqa: E402
from tuner.trial import checkpoint  # noqa: E402


def plain_train(config: dict[str, Any], workload: dict[str, Any]) -> None:
    """What a user writes without the platform: train, report, checkpoint every epoch."""
    import torch
    from ray import tune

    from workloads.classify import ClassifySettings, Trial
    from workloads.data import load

    torch.set_num_threads(1)
    settings = ClassifySettings(**workload)
    trial = Trial(config, settings, load(settings.data), torch.device("cpu"))
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as directory:
            trial.load_state(checkpoint.Checkpoint(directory).load())
    while not trial.done:
        metrics = trial.run_epoch(lambda: None)
        with tempfile.TemporaryDirectory() as directory:
            checkpoint.write(directory, trial.state(), {}, rng=[checkpoint.rng_state()])
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def epochs_trained(cfg: Config) -> int:
    """Epochs reported by all trials of the search: both sides must do the same work for the ratio to mean anything."""
    from ray.tune import ExperimentAnalysis

    assert cfg.search is not None
    analysis = ExperimentAnalysis(f"{cfg.storage.path}/{cfg.name}")
    return sum(int(r.get(cfg.search.time_attr, 0)) for r in analysis.results.values() if r)


def plain(cfg: Config, address: str) -> float:
    from hydra.utils import instantiate
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    search = cfg.search
    assert search is not None
    started = time.perf_counter()
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(plain_train, workload=search.workload), {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode=search.mode,
            num_samples=search.tune.num_samples,
            max_concurrent_trials=search.tune.max_concurrent_trials,
            search_alg=OptunaSearch(
                space=load_space(search.space),
                metric=search.metric,
                mode=search.mode,
                sampler=instantiate(search.searcher),
            ),
            scheduler=scheduler(search),
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            storage_path=cfg.storage.path,
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.run.num_to_keep),
        ),
    )
    results = tuner.fit()
    assert not results.errors, results.errors
    ray.shutdown()
    return time.perf_counter() - started


def platform(cfg: Config) -> float:
    started = time.perf_counter()
    assert execute(cfg) == 0
    return time.perf_counter() - started


def search_config(name: str, root: str, store: str, args: argparse.Namespace, address: str) -> Config:
    """One repeat's search, plain or through the platform: ASHA on, as in the searches."""
    c = experiment(
        name,
        f"{root}/{name}",
        args.epochs,
        space="search_spaces.mlp:space",
        model="mlp",
        num_samples=args.trials,
        concurrency=2,
        output_dir=f"{root}/{name}",
        cluster=ClusterConfig(address=address),
        tracking=TrackingConfig(tracking_uri=store, experiment_name=name, artifact_location=f"{root}/art"),
    )
    assert c.search is not None
    c.search.scheduler.grace_period = 2
    c.search.scheduler.reduction_factor = 2
    c.search.searcher.n_startup_trials = 4  # so that TPE models within 8 trials
    return c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    walls: dict[str, list[float]] = {"plain": [], "platform": []}
    work: dict[str, list[int]] = {"plain": [], "platform": []}
    try:
        with tempfile.TemporaryDirectory() as root, contextlib.redirect_stdout(sys.stderr):
            store = f"sqlite:///{root}/mlflow.db"
            MlflowClient(tracking_uri=store).search_experiments()  # creates the store's tables: once per store, untimed
            for i in range(args.repeats):
                for kind, run in (("plain", lambda c: plain(c, cluster.address)), ("platform", platform)):
                    c = search_config(f"{kind}{i}", root, store, args, cluster.address)
                    walls[kind].append(run(c))
                    work[kind].append(epochs_trained(c))
    finally:
        cluster.shutdown()
    medians = {k: statistics.median(v) for k, v in walls.items()}
    # ASHA's decisions depend on the order results arrive in: a repeat whose two searches trained a
    # different number of epochs compares different work, so the ratio is taken over equal-work repeats.
    same = [
        walls["platform"][i] / walls["plain"][i] for i in range(args.repeats) if work["plain"][i] == work["platform"][i]
    ]
    print(
        json.dumps(
            {
                **vars(args),
                "search": "mlp (digits), TPE seed 0 + ASHA, 2 trials at a time, 1 CPU each",
                "walls_s": {k: [round(x, 2) for x in v] for k, v in walls.items()},
                "epochs_trained": work,
                "median_s": {k: round(v, 2) for k, v in medians.items()},
                "platform_vs_plain": round(statistics.median(same), 3) if same else None,
                "equal_work_repeats": len(same),
                "target": 1.05,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
