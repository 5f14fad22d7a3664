"""Every private Ray API in tuner/_ray.py, called for real: a Ray upgrade that moves or changes one fails here,
by name, instead of deep inside a trial or the agent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from ray import tune
from ray.cluster_utils import Cluster

from tuner import _ray


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    # Every node up front: a node started after this process used the GCS client (token auth set up
    # in-process) cannot start workers.
    c.add_node(num_cpus=1, resources={"drain": 1})
    c.add_node(num_cpus=1, resources={"handoff": 1})
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def test_bootstrap_address_and_node_info(cluster: Cluster) -> None:
    gcs = _ray.bootstrap_address(cluster.address)
    nodes = _ray.node_info(gcs)
    assert {n["NodeID"] for n in ray.nodes()} == set(nodes)
    assert all(info["alive"] and info["ip"] for info in nodes.values())


def test_free_resources_per_node(cluster: Cluster) -> None:
    free = _ray.free_resources_per_node()
    assert {n["NodeID"] for n in ray.nodes() if n["Alive"]} == set(free)
    assert sum(r.get("CPU", 0) for r in free.values()) == 2


def test_quiet_token_auth_notice() -> None:
    """The warning Ray 2.60 logs at every local ray.init comes from the logger named in _ray."""
    import importlib
    import logging

    logger = importlib.import_module(_ray.TOKEN_AUTH_LOGGER).logger
    assert logger.name == _ray.TOKEN_AUTH_LOGGER
    ray_logger = logging.getLogger("ray")
    level = ray_logger.level
    try:
        ray_logger.setLevel(logging.WARNING)  # what ray.init(logging_level=WARNING) sets, as a search does
        logger.setLevel(logging.NOTSET)
        assert logger.isEnabledFor(logging.WARNING)  # as every local search printed it
        _ray.quiet_token_auth_notice()
        assert not logger.isEnabledFor(logging.WARNING) and logger.isEnabledFor(logging.ERROR)
    finally:
        ray_logger.setLevel(level)


def test_quiet_trial_failures() -> None:
    """Tune's logger and the text of its message for a failed trial attempt, as _ray filters them."""
    import importlib
    import inspect
    import logging

    controller = importlib.import_module(_ray.TRIAL_FAILURE_LOGGER)
    assert f'"{_ray.TRIAL_FAILURE_MESSAGE} {{trial}}"' in inspect.getsource(controller).replace('f"', '"')
    _ray.quiet_trial_failures()
    _ray.quiet_trial_failures()  # once is enough
    logger = logging.getLogger(_ray.TRIAL_FAILURE_LOGGER)
    assert len(logger.filters) == 1

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(logger.name, logging.ERROR, __file__, 1, message, (), None)

    assert not logger.filter(record(f"{_ray.TRIAL_FAILURE_MESSAGE} train_abc_00000"))
    assert logger.filter(record("Trial train_abc: Error stopping trial."))


def test_use_local_token(monkeypatch) -> None:
    """The twin is joined by its address: ray.init sends the machine's token only once this has enabled it."""
    from ray._private.authentication import authentication_token_setup

    enabled = []
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr(authentication_token_setup, "_enable_token_auth", lambda: enabled.append(True))
    monkeypatch.setattr(authentication_token_setup.AuthenticationTokenLoader.instance(), "has_token", lambda **_: True)
    _ray.use_local_token()
    assert enabled == [True]


def test_stop_propagating_env() -> None:
    from ray.tune.execution import class_cache

    _ray.stop_propagating_env(frozenset({"AWS_SECRET_ACCESS_KEY"}))
    assert "AWS_SECRET_ACCESS_KEY" not in class_cache.ENV_VARS_TO_PROPAGATE


def test_restored_run_config(tmp_path) -> None:
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="x", storage_path=str(tmp_path)))
    run_config = _ray.restored_run_config(tuner)
    assert isinstance(run_config, tune.RunConfig) and run_config.name == "x"


def _saved(config: dict) -> None:
    """Report whether the experiment state in storage already names this trial."""
    saved = "".join(p.read_text() for p in Path(config["experiment"]).glob("experiment_state-*.json"))
    tune.report({"saved": tune.get_context().get_trial_id() in saved})


def test_save_state_before_new_trials_start(cluster: Cluster, tmp_path, monkeypatch) -> None:
    """Each trial, one after another, finds itself in storage at its start (Tune alone would not save
    again for an hour here)."""
    from ray.tune.execution.tune_controller import TuneController

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "3600")
    monkeypatch.setattr(TuneController, "_maybe_update_trial_queue", TuneController._maybe_update_trial_queue)
    _ray.save_state_before_new_trials_start()
    _ray.save_state_before_new_trials_start()  # idempotent: wrapped once
    assert not getattr(TuneController._maybe_update_trial_queue.__wrapped__, _ray.SAVES_STATE_FIRST, False)
    tuner = tune.Tuner(
        _saved,
        param_space={"experiment": str(tmp_path / "saved")},
        tune_config=tune.TuneConfig(num_samples=3, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="saved", storage_path=str(tmp_path), verbose=0),
    )
    assert [r.metrics["saved"] for r in tuner.fit()] == [True, True, True]


def _finds_its_checkpoint(config: dict) -> None:
    import tempfile

    import pyarrow.fs

    with tempfile.TemporaryDirectory() as d:
        Path(d, "state").write_text("1")
        tune.report({"n": 1}, checkpoint=tune.Checkpoint.from_directory(d))
    filesystem, path = _ray.trial_storage()
    names = [i.base_name for i in filesystem.get_file_info(pyarrow.fs.FileSelector(path))]
    tune.report({"found": [n for n in names if n.startswith("checkpoint_")]})


def test_trial_storage(cluster: Cluster, tmp_path) -> None:
    tuner = tune.Tuner(
        _finds_its_checkpoint, run_config=tune.RunConfig(name="own", storage_path=str(tmp_path), verbose=0)
    )
    assert tuner.fit()[0].metrics["found"] == ["checkpoint_000000"]


@ray.remote(num_cpus=0)
class Receiver:
    def __init__(self) -> None:
        self.controller = None

    def take(self, controller) -> None:  # type: ignore[no-untyped-def]
        self.controller = controller

    def get(self):  # type: ignore[no-untyped-def]
        return self.controller


def _forever(config: dict) -> None:
    while True:
        time.sleep(0.1)


def test_train_controller_handoff_and_abort_train_run(cluster: Cluster, tmp_path) -> None:
    import threading

    from ray import train
    from ray.train.torch import TorchTrainer

    receiver = Receiver.remote()
    trainer = TorchTrainer(
        _forever,
        scaling_config=train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1, "handoff": 1}),
        run_config=train.RunConfig(
            storage_path=str(tmp_path), callbacks=[_ray.train_controller_handoff(receiver, "take")]
        ),
    )
    outcome: list[object] = []
    fit = threading.Thread(target=lambda: outcome.append(_try(trainer.fit)), daemon=True)
    fit.start()
    deadline = time.monotonic() + 120
    while (controller := ray.get(receiver.get.remote())) is None:
        assert time.monotonic() < deadline, "the controller was never handed over"
        time.sleep(0.2)
    _ray.abort_train_run(controller, timeout_s=30)
    fit.join(timeout=60)
    assert not fit.is_alive(), "fit() still running after the run was aborted"


def _try(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except Exception as exc:  # an aborted run ends fit() with an error: that it ends is the point
        return exc


def test_drain_aware_train_coordinator_is_the_one_ray_train_gets(cluster: Cluster) -> None:
    """Ray Train's get-or-create finds ours; one of Ray's own that runs already is kept (its users hold it)."""
    from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
        get_or_create_autoscaling_coordinator,
    )

    name, namespace = _ray.TRAIN_COORDINATOR
    rays_own = get_or_create_autoscaling_coordinator()  # as a Ray Train run started before ours creates it
    assert not hasattr(rays_own, "leaves_out_draining_nodes")
    assert _ray.drain_aware_train_coordinator() is False
    ray.kill(rays_own)  # a fresh cluster
    deadline = time.monotonic() + 30
    while _actor_named(name, namespace):
        assert time.monotonic() < deadline, "the killed coordinator kept its name"
        time.sleep(0.1)
    assert _ray.drain_aware_train_coordinator() is True
    assert ray.get(get_or_create_autoscaling_coordinator().leaves_out_draining_nodes.remote())
    assert _ray.drain_aware_train_coordinator() is True  # already ours


def _actor_named(name: str, namespace: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
        return True
    except ValueError:
        return False


@ray.remote(num_cpus=1, resources={"drain": 1})
class Busy:
    """Work on the worker node: an idle node that is drained exits at once."""

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def test_drain_node_and_draining_nodes(cluster: Cluster) -> None:
    """Last in the module: the drained worker leaves the shared cluster."""
    busy = Busy.remote()  # on the node with the "drain" resource
    node_id = ray.get(busy.node.remote())
    assert node_id not in _ray.draining_nodes()
    deadline_s = time.time() + 60
    accepted, error = _ray.drain_node(_ray.bootstrap_address(cluster.address), node_id, "test", deadline_s)
    assert accepted, error
    draining = _ray.draining_nodes()
    assert draining[node_id] / 1000 == pytest.approx(deadline_s, abs=1)
    # Ray Train's coordinator (ours) reserves nothing on the node being reclaimed.
    if not _actor_named(*_ray.TRAIN_COORDINATOR):
        assert _ray.drain_aware_train_coordinator()
    coordinator = ray.get_actor(*_ray.TRAIN_COORDINATOR)
    assert node_id not in {n["NodeID"] for n in ray.get(coordinator.nodes_staying.remote())}
    ray.get(coordinator.request_resources.remote("probe", [{"CPU": 1}] * 2, expire_after_s=60))
    reserved = ray.get(coordinator.get_reserved_resources.remote("probe", recompute=True))
    assert reserved and node_id not in reserved, reserved


def test_quiet_restore_hint() -> None:
    """Tune's advice to call Tuner.restore comes from the logger named in _ray, with the text it filters on."""
    import importlib
    import inspect
    import logging

    module = importlib.import_module(_ray.RESTORE_HINT_LOGGER)
    assert module.logger.name == _ray.RESTORE_HINT_LOGGER
    assert _ray.RESTORE_HINT_TEXT in inspect.getsource(module)
    _ray.quiet_restore_hint()
    _ray.quiet_restore_hint()  # once is enough
    logger = logging.getLogger(_ray.RESTORE_HINT_LOGGER)
    assert sum(isinstance(f, _ray._DropMessage) for f in logger.filters) == 1

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(logger.name, logging.INFO, __file__, 1, message, (), None)

    assert not logger.filter(record('To resume: Tuner.restore(path="/x", trainable=...)'))
    assert logger.filter(record("Total run time: 3.2 seconds"))


def test_quiet_experiment_analysis() -> None:
    import importlib
    import logging

    assert importlib.import_module(_ray.EXPERIMENT_ANALYSIS_LOGGER).logger.name == _ray.EXPERIMENT_ANALYSIS_LOGGER
    _ray.quiet_experiment_analysis()
    assert logging.getLogger(_ray.EXPERIMENT_ANALYSIS_LOGGER).level == logging.ERROR


def test_filter_storage_logs() -> None:
    """Each logger that reports experiment-state uploads is a module's logger, named as in _ray."""
    import importlib
    import logging

    class Mark(logging.Filter):
        pass

    for name in _ray.STORAGE_LOGGERS:
        assert importlib.import_module(name).logger.name == name
    _ray.filter_storage_logs(Mark())
    _ray.filter_storage_logs(Mark())  # once is enough
    assert all(sum(isinstance(f, Mark) for f in logging.getLogger(n).filters) == 1 for n in _ray.STORAGE_LOGGERS)


def test_search_generator_state_files_and_keys(tmp_path) -> None:
    """Tune's search generator saves its state under the file name _ray globs, with the keys the restore sets."""
    from ray.tune.search import SearchGenerator
    from ray.tune.search.optuna import OptunaSearch

    generator = SearchGenerator(OptunaSearch(metric="x", mode="min", space={"a": tune.uniform(0, 1)}))
    generator.save_to_dir(str(tmp_path), "2026-01-01_00-00-00")
    files = _ray.search_generator_state_files(generator, str(tmp_path))
    assert len(files) == 1
    state = generator.get_state()
    assert state[_ray.SEARCH_GENERATOR_COUNTER] == 0 and state[_ray.SEARCH_GENERATOR_FINISHED] is False
    generator.set_state({**state, _ray.SEARCH_GENERATOR_COUNTER: 3})
    assert generator.get_state()[_ray.SEARCH_GENERATOR_COUNTER] == 3


def test_function_trainable_and_restored_checkpoint(tmp_path) -> None:
    """The class Tune builds from a function trainable, and the checkpoint inside what it passes to restore()."""
    import inspect

    from ray.train._internal.session import _TrainingResult
    from ray.tune import Trainable

    base = _ray.function_trainable(lambda config: None)
    assert issubclass(base, Trainable) and "checkpoint_path" in inspect.signature(base.restore).parameters
    checkpoint = tune.Checkpoint.from_directory(str(tmp_path))
    assert _ray.restored_checkpoint(_TrainingResult(checkpoint=checkpoint, metrics={})) is checkpoint
    assert _ray.restored_checkpoint(str(tmp_path)) is None


def test_on_tune_stop_signal() -> None:
    """Tune's SIGINT handler logs the text _ray counts, on the logger it watches, before it restores the handler."""
    import importlib
    import inspect
    import logging

    source = inspect.getsource(importlib.import_module(_ray.RESTORE_HINT_LOGGER))
    logged, restored = source.find(_ray.STOP_SIGNAL_TEXT), source.find("signal.signal(signal.SIGINT, original_handler)")
    assert 0 <= logged < restored
    seen: list[int] = []
    logger = logging.getLogger(_ray.RESTORE_HINT_LOGGER)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(logger.name, logging.WARNING, __file__, 1, message, (), None)

    with _ray.on_tune_stop_signal(seen.append):
        for _ in range(2):
            assert logger.filter(record(f"{_ray.STOP_SIGNAL_TEXT} (e.g. via SIGINT/Ctrl+C), ending Ray Tune run."))
        logger.filter(record("Total run time: 3.2 seconds"))
    logger.filter(record(_ray.STOP_SIGNAL_TEXT))  # after the block: not counted
    assert seen == [1, 2]


def test_kuberay_autoscaling_config() -> None:
    import yaml

    from tests.conftest import REPO

    (ray_cluster,) = [
        d for d in yaml.safe_load_all((REPO / "cluster/k8s/raycluster.yaml").read_text()) if d["kind"] == "RayCluster"
    ]
    config = _ray.kuberay_autoscaling_config(ray_cluster)
    spot_g5 = config["available_node_types"]["spot-g5"]
    assert (
        config["head_node_type"] == "headgroup" and config["available_node_types"]["headgroup"]["resources"]["CPU"] == 0
    )
    assert spot_g5["resources"]["GPU"] == 1 and spot_g5["resources"]["type:g5.xlarge"] == 1000
    assert spot_g5["labels"] == {"tuner.io/instance-type": "g5.xlarge", "ray.io/market-type": "spot"}
    assert spot_g5["priority"] == 10 and spot_g5["max_workers"] == 8


def test_standing_resource_request(cluster: Cluster) -> None:
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"CPU": 1.0, "type:g6.xlarge": 0.001}])
    assert _ray.standing_resource_request() == [{"CPU": 1.0, "type:g6.xlarge": 0.001}]
    request_resources(bundles=[])
    assert _ray.standing_resource_request() == []


def test_fake_node_provider_and_its_nodes_without_ray(monkeypatch) -> None:
    """The twin's provider subclasses Ray's fake one and reads its node table; a worker whose raylet exited is
    found (the node objects are Ray's ``ray._private.node.Node``: its ``remaining_processes_alive``)."""
    from types import SimpleNamespace

    from ray._private.node import Node

    monkeypatch.setenv("RAY_FAKE_CLUSTER", "1")
    provider = _ray.fake_node_provider()({}, "twin")
    assert _ray.fake_nodes_without_ray(provider) == []  # the head only, which the provider did not start
    provider._nodes["w1"] = {"tags": {}, "node": SimpleNamespace(remaining_processes_alive=lambda: False)}
    provider._nodes["w2"] = {"tags": {}, "node": SimpleNamespace(remaining_processes_alive=lambda: True)}
    assert _ray.fake_nodes_without_ray(provider) == ["w1"]
    assert callable(Node.remaining_processes_alive)


class _RestartedTrial:
    """What Tune's result loggers read of a trial: its driver-side directory, its stored one, a checkpoint."""

    def __init__(self, root: Path) -> None:
        import pyarrow.fs

        self.config = {"lr": 0.1}
        self.checkpoint = object()  # restarted from a checkpoint: Tune copies the stored result files back
        self.local_path = str(root / "driver")
        self.storage = SimpleNamespace(
            trial_fs_path=str(root / "stored"), storage_filesystem=pyarrow.fs.LocalFileSystem()
        )
        (root / "driver").mkdir(parents=True)
        (root / "stored").mkdir()

    def init_local_path(self) -> None:
        pass


def test_result_loggers_keep_the_drivers_file_when_a_trial_restarts(tmp_path: Path) -> None:
    """Tune's own JSON logger (``LoggerCallback._restore_from_remote``) copies the stored result.json, which lags
    the driver's, over it at a trial's restart; the platform's keeps the driver's, and restores the stored one
    only where the driver has none (a resumed driver)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    for logger, kept in ((JsonLoggerCallback(), 1), (_ray.result_loggers()[0], 3)):
        root = tmp_path / str(kept)
        root.mkdir()
        trial = _RestartedTrial(root)
        Path(trial.local_path, "result.json").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n')
        Path(trial.storage.trial_fs_path, "result.json").write_text('{"step": 1}\n')  # synced at the checkpoint
        logger.log_trial_start(trial)
        logger.log_trial_end(trial)
        assert len(Path(trial.local_path, "result.json").read_text().splitlines()) == kept
    resumed = _RestartedTrial(tmp_path / "resumed")
    Path(resumed.storage.trial_fs_path, "result.json").write_text('{"step": 1}\n')
    json_logger, csv_logger = _ray.result_loggers()
    json_logger.log_trial_start(resumed)
    json_logger.log_trial_end(resumed)
    assert Path(resumed.local_path, "result.json").read_text() == '{"step": 1}\n'
    assert isinstance(csv_logger, CSVLoggerCallback)
