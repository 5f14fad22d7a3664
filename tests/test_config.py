"""Config composition: every search composes; typos, wrong types and bad values fail clearly."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from tuner import config as config_mod
from tuner.config import ConfigError, to_settings
from tuner.run import available_searches, check_space, load_space

CONF = str(Path(__file__).resolve().parent.parent / "conf")
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
    for path in (Path(CONF) / "search").glob("*.yaml"):
        text = path.read_text()
        assert "defaults:" not in text and "\ncluster" not in text and "\nstorage" not in text, path


def test_groups_switch_without_plus() -> None:
    cfg = to_settings(compose_cfg("+search=mlp", "storage=s3", "storage.bucket=my-bucket", "tracking=none"))
    assert cfg.storage.kind == "s3" and cfg.storage.bucket == "my-bucket" and not cfg.tracking.enabled


def test_no_search_leaves_it_empty() -> None:
    assert compose_cfg().search is None


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
        ("search.workload.epochs=0", "epochs=0"),
        ("search.mode=best", "use min or max"),
        ("search.resources.cpu=0", "cpu must be > 0"),
        ("storage.kind=ftp", "use local or s3"),
    ],
)
def test_bad_values_fail_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        to_settings(compose_cfg("+search=mlp", override))


def test_s3_needs_a_valid_bucket() -> None:
    with pytest.raises(ConfigError, match="storage.bucket is required"):
        to_settings(compose_cfg("+search=mlp", "storage=s3"))
    with pytest.raises(ConfigError, match="not a valid S3 bucket name"):
        to_settings(compose_cfg("+search=mlp", "storage=s3", "storage.bucket=Bad_Bucket"))
    with pytest.raises(ConfigError, match="endpoint_url"):
        to_settings(compose_cfg("+search=mlp", "storage=s3", "storage.bucket=ok-bucket", "storage.endpoint_url=localhost"))


def test_space_must_import_and_suggest() -> None:
    with pytest.raises(ConfigError, match="cannot be imported"):
        load_space("search_spaces.nope:space")
    with pytest.raises(ConfigError, match="suggests no hyperparameters"):
        check_space(lambda trial: None, "x:empty")


def test_benchmark_space_draws_build_models() -> None:
    """The wide MLP space of scripts/bench_search.py: every random draw is a model that runs."""
    import optuna
    import torch

    from tuner import models

    space = load_space("search_spaces.mlp:wide")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        space(trial)
        assert models.build("mlp", trial.params, (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_price_guard_limits_are_typed() -> None:
    settings = to_settings(compose_cfg("+search=mlp", "price_guard.enabled=true", "+price_guard.max_usd_per_hour={g5.xlarge:0.6}"))
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
