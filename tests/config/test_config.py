"""Config composition: every search composes; typos, wrong types and bad values fail clearly."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import get_object
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from tuner import config as config_mod
from tuner.cli import CONF_DIR, available_searches
from tuner.config import SAMPLERS, SCHEDULERS, ConfigError, to_settings
from tuner.cost.replacement import MoveOnNotice
from tuner.run import build
from tuner.run.build import check_space, load_space
from tuner.trial import trainer

CONF = str(CONF_DIR)
config_mod.register()


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("name", available_searches())
def test_every_search_composes_and_validates(name: str) -> None:
    settings = to_settings(compose_cfg(f"+search={name}"))
    assert settings.search is not None and settings.search.name == name
    assert settings.name == name
    load_space(settings.search.space)


def test_searches_exist() -> None:
    assert {"resnet", "mlp"} <= set(available_searches())


def test_every_yaml_starts_with_run_with_comment() -> None:
    for path in Path(CONF).rglob("*.yaml"):
        assert path.read_text().startswith("# Run with: python -m tuner."), path


def test_search_files_never_pick_cluster_storage_tracking() -> None:
    searches = set(available_searches())
    for path in (Path(CONF) / "search").glob("*.yaml"):
        text = path.read_text()
        assert "\ncluster" not in text and "\nstorage" not in text and "\ntracking" not in text, path
        extends = OmegaConf.load(path).get("defaults", [])  # a search may extend another search, nothing else
        assert all(entry == "_self_" or entry in searches for entry in extends), path


def test_groups_switch_without_plus() -> None:
    cfg = to_settings(compose_cfg("+search=mlp", "storage=s3", "storage.bucket=my-bucket", "tracking=none"))
    assert cfg.storage.kind == "s3" and cfg.storage.bucket == "my-bucket" and not cfg.tracking.enabled


def test_no_search_leaves_it_unnamed() -> None:
    assert OmegaConf.is_missing(compose_cfg().search, "name")


def test_typo_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg("+search=mlp", "search.tune.nm_samples=3")
    assert "Key 'nm_samples' not in 'TuneSettings'" in str(info.value.__cause__)


def test_wrong_type_fails_at_compose_time() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg("+search=mlp", "search.tune.num_samples=many")
    assert isinstance(info.value.__cause__, ValidationError)


def test_unknown_search() -> None:
    with pytest.raises(Exception, match="search/nope"):
        compose_cfg("+search=nope")


@pytest.mark.parametrize(
    "override,message",
    [
        ("search.tune.num_samples=-1", "num_samples=-1: must be > 0"),
        ("search.tune.time_budget_s=0", "time_budget_s=0.0: must be > 0"),
        ("search.max_t=0", "max_t=0: must be > 0"),
        ("search.resources.workers=[3,2]", r"workers=\[3, 2\]: need 1 <= min <= max"),
        ("search.resources.workers=two", "write an integer or \\[min, max\\]"),
        ("search.mode=best", "use min or max"),
        ("search.resources.cpu=0", "cpu must be > 0"),
        ("storage.kind=ftp", "use local or s3"),
        ("search.resources.workers=2 cluster.include_dashboard=false", "workers > 1 needs Ray's dashboard"),
        ("+search.objectives.cost_usd=cheap", "search.objectives.cost_usd='cheap': give each objective min or max"),
        ("+search.objectives.val_acc=max", "search.objectives repeats search.metric='val_acc'"),
    ],
)
def test_bad_values_fail_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        to_settings(compose_cfg("+search=mlp", *override.split()))


def test_s3_needs_a_valid_bucket() -> None:
    with pytest.raises(ConfigError, match="storage.bucket is required"):
        to_settings(compose_cfg("+search=mlp", "storage=s3"))
    with pytest.raises(ConfigError, match="not a valid S3 bucket name"):
        to_settings(compose_cfg("+search=mlp", "storage=s3", "storage.bucket=Bad_Bucket"))
    with pytest.raises(ConfigError, match="endpoint_url"):
        to_settings(
            compose_cfg("+search=mlp", "storage=s3", "storage.bucket=ok-bucket", "storage.endpoint_url=localhost")
        )


def test_space_must_import_and_suggest() -> None:
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_space("search_spaces.nope:space")
    with pytest.raises(ConfigError, match="suggests no hyperparameters"):
        check_space(lambda trial: None, "x:empty")


def test_benchmark_space_draws_build_models() -> None:
    """The wide MLP space of scripts/bench_search.py: every random draw is a model that runs."""
    import optuna
    import torch

    from workloads import models

    space = load_space("search_spaces.mlp:wide")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        space(trial)
        assert models.build("mlp", trial.params, (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_price_guard_limits_are_typed() -> None:
    settings = to_settings(
        compose_cfg("+search=mlp", "price_guard.enabled=true", "+price_guard.max_usd_per_hour={g5.xlarge:0.6}")
    )
    assert settings.price_guard.max_usd_per_hour == {"g5.xlarge": 0.6}
    with pytest.raises(ConfigCompositionException):
        compose_cfg("+search=mlp", "+price_guard.max_usd_per_hour={g5.xlarge:cheap}")
    with pytest.raises(ConfigError, match="needs a limit"):
        to_settings(compose_cfg("+search=mlp", "price_guard.enabled=true"))


def test_report_config_composes() -> None:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = to_settings(compose(config_name="report", overrides=["since_days=7", "experiments=[resnet]"]))
    assert cfg.since_days == 7 and cfg.experiments == ["resnet"] and cfg.tracking.experiment_name == "tuner-reports"
    with pytest.raises(ConfigCompositionException), initialize_config_dir(config_dir=CONF, version_base="1.3"):
        compose(config_name="report", overrides=["since_dayz=7"])


@pytest.mark.parametrize(
    "override,message",
    [
        ("search.workload.epochs=0", r"search.workload: epochs=0: must be > 0"),
        ("+search.workload.epoch=3", r"search.workload.epoch: Key 'epoch' not in 'ClassifySettings'"),
        ("search.workload.epochs=many", r"search.workload.epochs: Value 'many' of type 'str' could not be converted"),
        ("search.workload.model=vit", r"model='vit': use one of mlp, resnet"),
    ],
)
def test_a_typed_trainer_checks_its_settings_before_anything_starts(override: str, message: str) -> None:
    settings = to_settings(compose_cfg("+search=resnet", override, "search.max_t=5"))
    fn = trainer.load(settings.search.trainer)
    with pytest.raises(ConfigError, match=message):
        trainer.settings_for(fn, settings.search.workload)


def test_an_untyped_trainer_gets_its_settings_as_a_dict() -> None:
    def fit(config, settings):  # no annotation: free-form
        return None

    assert trainer.settings_for(fit, {"steps": 3, "anything": {"goes": 1}}) == {"steps": 3, "anything": {"goes": 1}}


def fit_with_keywords(params, *, epochs=30, seed=0, lr_floor):  # a trainer written the ordinary way
    return params, epochs, seed, lr_floor


def test_a_keyword_trainer_gets_the_workload_as_keywords_checked_against_its_signature() -> None:
    settings = trainer.settings_for(fit_with_keywords, {"epochs": 5, "lr_floor": 1e-4})
    assert trainer.call(fit_with_keywords, {"lr": 0.1}, settings) == ({"lr": 0.1}, 5, 0, 1e-4)
    with pytest.raises(
        ConfigError,
        match=r"search.workload.epoch: tests.config.test_config:fit_with_keywords takes no "
        r"such keyword \(it takes: epochs, seed, lr_floor\)",
    ):
        trainer.settings_for(fit_with_keywords, {"epoch": 5, "lr_floor": 1e-4})
    with pytest.raises(
        ConfigError, match=r"search.workload.lr_floor is missing: .* needs it \(a keyword without a default\)"
    ):
        trainer.settings_for(fit_with_keywords, {"epochs": 5})

    def fit_anything(params, **settings):
        return settings

    assert trainer.call(fit_anything, {}, trainer.settings_for(fit_anything, {"x": 1})) == {"x": 1}
    assert not trainer.takes_keywords(lambda config, settings: None) and not trainer.takes_keywords(lambda config: None)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("nopkg.train:fit", r"cannot be imported \(No module named 'nopkg'\)"),
        ("workloads.classify:nope", "module workloads.classify has no 'nope'"),
        ("workloads.data:LOADERS", "is a dict, not a function"),
        ("workloads.classify:evaluate", r"must accept \(config, settings\), its signature is \(model"),
        ("workloads.classify", "write it as module:function"),
    ],
)
def test_a_trainer_that_cannot_be_called_is_refused(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        trainer.load(spec)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
@pytest.mark.parametrize("searcher", sorted(SAMPLERS))
def test_every_scheduler_and_sampler_composes_and_instantiates(scheduler: str, searcher: str) -> None:
    settings = to_settings(compose_cfg("+search=mlp", f"search/scheduler={scheduler}", f"search/searcher={searcher}"))
    assert isinstance(build.search_alg(settings.search).searcher.study.sampler, get_object(SAMPLERS[searcher]._target_))
    built = build.scheduler(settings.search)
    assert isinstance(built, MoveOnNotice)  # the search's scheduler, wrapped to pause a trial that moves
    assert isinstance(built.inner, get_object(SCHEDULERS[scheduler]._target_))


def test_scheduler_nodes_mirror_the_api_with_the_search_s_time() -> None:
    settings = to_settings(compose_cfg("+search=resnet", "search.scheduler.grace_period=3"))
    asha = build.scheduler(settings.search).inner
    assert (asha._time_attr, asha._max_t, asha._reduction_factor) == ("epoch", 10, 3)  # max_t: search.max_t
    with pytest.raises(ConfigCompositionException):
        # not HyperBand's
        compose_cfg("+search=resnet", "search/scheduler=hyperband", "search.scheduler.grace_period=3")


def test_tune_lets_as_many_trials_wait_for_resources_as_may_run(tmp_path, monkeypatch) -> None:
    """Our searcher limits concurrency itself (no ConcurrencyLimiter), so Tune would let one trial at a time
    wait for its resources and trial starts would queue (names Tune's private ``_get_max_pending_trials``)."""
    from ray.tune.execution.tune_controller import _get_max_pending_trials

    monkeypatch.setenv(build.MAX_PENDING_ENV, "unset")  # undone after the test, as build_tuner's own setting is
    monkeypatch.delenv(build.MAX_PENDING_ENV)
    monkeypatch.setattr(build, "USER_MAX_PENDING", None)
    settings = to_settings(compose_cfg("+search=mlp", "search.tune.max_concurrent_trials=3", f"output_dir={tmp_path}"))
    build.build_tuner(settings, build.trial_spec(settings, {}), resume=False, callbacks=[])
    assert _get_max_pending_trials(build.search_alg(settings.search)) == 3


def test_a_multi_objective_search_needs_a_sampler_that_can_run_one() -> None:
    settings = to_settings(compose_cfg("+search=resnet_cost", "search/searcher=cmaes"))
    with pytest.raises(ConfigError, match="searcher=CmaEsSampler cannot optimise several objectives"):
        build.search_alg(settings.search)
    for sampler in ("tpe", "nsga2"):
        searcher = build.search_alg(
            to_settings(compose_cfg("+search=resnet_cost", f"search/searcher={sampler}")).search
        ).searcher
        assert searcher.metrics == ["val_acc", "cost_usd"] and len(searcher.study.directions) == 2


def test_the_platforms_bookkeeping_is_not_an_objective() -> None:
    settings = to_settings(compose_cfg("+search=mlp", "+search.objectives.preemptions=min"))
    with pytest.raises(ConfigError, match="search.objectives: preemptions is the platform's bookkeeping"):
        build.search_alg(settings.search)


def test_objectives_the_trainer_reports_are_required_in_its_reports_and_the_ledgers_are_not() -> None:
    settings = to_settings(
        compose_cfg("+search=mlp", "+search.objectives.cost_usd=min", "+search.objectives.train_loss=min")
    )
    assert build.objective(settings.search).reported == ("train_loss",)


def test_a_trial_takes_unlabelled_nodes_as_the_ledger_does() -> None:
    settings = to_settings(
        compose_cfg("+search=mlp", "pricing.region=eu-north-1", "cost.assumed_instance_type=g6.xlarge")
    )
    spec = build.trial_spec(settings, {})
    assert (spec.assumed_instance_type, spec.assumed_region) == ("g6.xlarge", "eu-north-1")
