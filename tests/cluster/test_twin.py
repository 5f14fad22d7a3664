"""The local twin is derived from cluster/aws.yaml; trials that cannot fit are refused up front."""

import pytest

from tuner.cluster.launcher import check_fits, load_launcher_config, worker_types
from tuner.cluster.twin import HEAD_TYPE, twin_config
from tuner.config import ClusterConfig, ConfigError
from tuner.spot.labels import INSTANCE_TYPE, MARKET, TORCH_THREADS, ZONE


def test_twin_mirrors_the_aws_worker_types() -> None:
    aws = load_launcher_config("cluster/aws.yaml")
    twin = twin_config(aws, ClusterConfig(name="local_spot", max_workers_per_type=2, idle_timeout_minutes=0.5))
    assert twin["provider"]["type"] == "external" and twin["provider"]["boot_s"] == {"*": 2.0}
    assert set(twin["available_node_types"]) == set(worker_types(aws)) | {HEAD_TYPE}
    assert twin["available_node_types"][HEAD_TYPE]["resources"] == {"CPU": 0}
    for name, node_type in worker_types(aws).items():
        local = twin["available_node_types"][name]
        assert local["resources"] == node_type["resources"]  # fake GPUs, same counts
        assert local["labels"][INSTANCE_TYPE] == node_type["node_config"]["InstanceType"]
        assert local["labels"][MARKET] == node_type["labels"][MARKET]
        assert local["labels"][ZONE] in aws["provider"]["availability_zone"].split(",")
        assert local["min_workers"] == node_type["min_workers"]
        assert local["max_workers"] == min(node_type["max_workers"], 2)
    assert twin["idle_timeout_minutes"] == 0.5


def test_trial_that_fits_no_worker_type_is_refused() -> None:
    aws = load_launcher_config("cluster/aws.yaml")
    check_fits(aws, {"CPU": 4, "GPU": 1})
    check_fits(aws, {"CPU": 8, "GPU": 4})  # the 4-GPU type
    # 24 nodes at most: the six 4-GPU nodes (3 types x 2: 24 one-GPU slots) and 18 one-GPU nodes
    check_fits(aws, {"CPU": 1, "GPU": 1}, workers=42)
    with pytest.raises(ConfigError, match="no worker type fits a trial needing cpu=1 gpu=8"):
        check_fits(aws, {"CPU": 1, "GPU": 8})
    with pytest.raises(ConfigError, match="no worker type fits 43 workers of cpu=1 gpu=1"):
        check_fits(aws, {"CPU": 1, "GPU": 1}, workers=43)


def test_unreadable_launcher_config() -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_launcher_config("cluster/nope.yaml")


def test_a_twin_type_can_train_with_more_torch_threads_and_a_typo_is_refused() -> None:
    aws = load_launcher_config("cluster/aws.yaml")
    cfg = ClusterConfig(name="local_spot", launcher_config="cluster/aws.yaml", torch_threads={"spot_g6": 2})
    types = twin_config(aws, cfg)["available_node_types"]
    assert types["spot_g6"]["labels"][TORCH_THREADS] == "2" and TORCH_THREADS not in types["spot_g5"]["labels"]
    with pytest.raises(ConfigError, match="spot_g7 is not a worker type"):
        twin_config(
            aws, ClusterConfig(name="local_spot", launcher_config="cluster/aws.yaml", torch_threads={"spot_g7": 2})
        )
