"""cluster/aws.yaml: Ray's validation, then Ray's own AWS bootstrap and node creation against moto's server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml

from tests.conftest import BIN, REPO, free_port, stop, wait_for_port
from tests.tooling.metadata import MetadataServer

sys.path.insert(0, str(REPO / "scripts"))
import aws_setup  # noqa: E402

AWS_YAML = REPO / "cluster" / "aws.yaml"
SSH_CIDR = "203.0.113.7/32"


def load() -> dict:
    return yaml.safe_load(AWS_YAML.read_text())


def test_ray_validates_the_config() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(load())
    validate_config(config)
    types = config["available_node_types"]
    assert types["head"]["resources"] == {"CPU": 0}  # no trial fits on the head
    spot = [
        n for n, t in types.items() if t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    ]
    # Diversified, as the seed prescribes ("10 to 15 different instance types to maximise availability").
    itypes = {types[n]["node_config"]["InstanceType"] for n in spot}
    assert len(itypes) >= 10 and len({t.split(".")[0] for t in itypes}) >= 5  # g4dn, g5, g6, g6e, p3
    assert any(types[n]["resources"]["GPU"] > 1 for n in spot) and any(types[n]["resources"]["GPU"] == 1 for n in spot)
    assert (
        types["ondemand_g5"]["min_workers"] == 0 and "InstanceMarketOptions" not in types["ondemand_g5"]["node_config"]
    )
    assert len(config["provider"]["availability_zone"].split(",")) >= 2


def test_every_worker_type_is_priced_labelled_and_shaped_as_the_catalog_says() -> None:
    from tuner.cost.pricing import Catalog

    config, catalog = load(), Catalog()
    region = config["provider"]["region"]
    for name, node_type in config["available_node_types"].items():
        if name == config["head_node_type"]:
            continue
        itype = node_type["node_config"]["InstanceType"]
        market = "spot" if "InstanceMarketOptions" in node_type["node_config"] else "on-demand"
        assert node_type["labels"] == {"tuner.io/instance-type": itype, "ray.io/market-type": market}, name
        assert catalog.on_demand(itype, region) and catalog.spot_price(itype, region, "?"), f"{itype} is not priced"
        shape = catalog.shape(itype)
        compute = {k: v for k, v in node_type["resources"].items() if not k.startswith("type:")}
        assert shape is not None and compute == {"CPU": shape.vcpus, "GPU": shape.gpus}, name


def test_placement_can_steer_to_every_spot_type_and_fall_back_from_each_to_on_demand() -> None:
    """Each spot type declares its own ``type:`` resource (what a placed trial asks for); the on-demand type
    declares every spot type's, so any placed trial may fall back there."""
    from tuner.cost.placement import type_resource

    types = load()["available_node_types"]
    spot = {n: t for n, t in types.items() if t.get("labels", {}).get("ray.io/market-type") == "spot"}
    for name, node_type in spot.items():
        own = {k for k in node_type["resources"] if k.startswith("type:")}
        assert own == {type_resource(node_type["labels"]["tuner.io/instance-type"])}, name
    every = {type_resource(t["labels"]["tuner.io/instance-type"]) for t in spot.values()}
    assert every <= set(types["ondemand_g5"]["resources"])


def test_every_key_is_commented() -> None:
    """Each top-level key and each node type says why, on its line or the line above."""
    lines = AWS_YAML.read_text().splitlines()
    node_types = set(load()["available_node_types"])
    for i, line in enumerate(lines):
        key = line.split(":")[0].strip()
        top_level = line[:1].isalpha()
        if top_level or (line.startswith("  ") and not line.startswith("   ") and key in node_types):
            commented = "#" in line or lines[i - 1].lstrip().startswith("#")
            containers = {"provider", "auth", "available_node_types", "head_node_type", "file_mounts"}
            assert commented or key in containers, f"uncommented key: {line}"


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("ab")
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture
def aws_env(moto: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)  # every boto3 client, Ray's included
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("HOME", str(tmp_path))  # Ray writes the cluster's SSH key under ~/.ssh
    return moto


def test_bootstrap_and_one_node_of_each_type(aws_env: str) -> None:
    from ray.autoscaler._private.aws.config import bootstrap_aws
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.util import prepare_config
    from ray.autoscaler.tags import (
        TAG_RAY_CLUSTER_NAME,
        TAG_RAY_NODE_KIND,
        TAG_RAY_USER_NODE_TYPE,
    )

    session = boto3.Session(region_name="us-east-1")
    ec2 = session.client("ec2")
    made = aws_setup.setup(session, "tuner-ckpts", SSH_CIDR)

    config = prepare_config(load())
    image = ec2.describe_images()["Images"][0]["ImageId"]  # moto knows its own AMIs, not the DLAMI
    for node_type in config["available_node_types"].values():
        node_type["node_config"]["ImageId"] = image
    config = bootstrap_aws(config)

    provider = AWSNodeProvider(config["provider"], config["cluster_name"])
    for name, node_type in config["available_node_types"].items():
        kind = "head" if name == config["head_node_type"] else "worker"
        tags = {TAG_RAY_NODE_KIND: kind, TAG_RAY_USER_NODE_TYPE: name, TAG_RAY_CLUSTER_NAME: config["cluster_name"]}
        provider.create_node(node_type["node_config"], tags, 1)

    reservations = ec2.describe_instances()["Reservations"]
    instances = {
        next(t["Value"] for t in i["Tags"] if t["Key"] == TAG_RAY_USER_NODE_TYPE): i
        for r in reservations
        for i in r["Instances"]
    }
    assert set(instances) == set(config["available_node_types"])
    for name, instance in instances.items():
        spot = name.startswith("spot_")
        assert (instance.get("InstanceLifecycle") == "spot") == spot, name
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags[TAG_RAY_CLUSTER_NAME] == "tuner-spot"
        assert [g["GroupId"] for g in instance["SecurityGroups"]] == [made["security_group"]]
        profile = instance["IamInstanceProfile"]["Arn"]
        assert profile.endswith("/tuner-head" if name == "head" else "/tuner-worker"), (name, profile)
    zones = {
        ec2.describe_subnets(SubnetIds=[i["SubnetId"]])["Subnets"][0]["AvailabilityZone"] for i in instances.values()
    }
    subnets = config["available_node_types"]["spot_g5"]["node_config"]["SubnetIds"]
    subnet_zones = {s["AvailabilityZone"] for s in ec2.describe_subnets(SubnetIds=subnets)["Subnets"]}
    assert len(subnet_zones) >= 2 and zones <= subnet_zones

    # The only way in from outside: SSH from the configured CIDR. No dashboard/GCS/client port.
    group = ec2.describe_security_groups(GroupIds=[made["security_group"]])["SecurityGroups"][0]
    public = [p for p in group["IpPermissions"] if p.get("IpRanges")]
    assert [(p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in public] == [
        (22, 22, [SSH_CIDR])
    ]
    assert all(not p.get("Ipv6Ranges") for p in group["IpPermissions"])


def test_worker_profile_reaches_only_the_bucket(aws_env: str) -> None:
    session = boto3.Session(region_name="us-east-1")
    aws_setup.setup(session, "tuner-ckpts", SSH_CIDR)
    iam = session.client("iam")
    (policy_name,) = iam.list_role_policies(RoleName="tuner-worker")["PolicyNames"]
    document = iam.get_role_policy(RoleName="tuner-worker", PolicyName=policy_name)["PolicyDocument"]
    resources = {
        r for s in document["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    }
    assert resources == {"arn:aws:s3:::tuner-ckpts", "arn:aws:s3:::tuner-ckpts/*"}
    assert all(a.startswith("s3:") for s in document["Statement"] for a in s["Action"])


def test_setup_refuses_ssh_from_everywhere(aws_env: str) -> None:
    with pytest.raises(SystemExit, match="0.0.0.0/0"):
        aws_setup.setup(boto3.Session(region_name="us-east-1"), "tuner-ckpts", "0.0.0.0/0")


@pytest.mark.parametrize("market,agent", [("spot", True), ("on-demand", False)])
def test_node_start_labels_from_instance_metadata(market: str, agent: bool) -> None:
    imds = MetadataServer("aws").start()
    imds.instance.update({"instance-life-cycle": market, "placement/availability-zone": "us-east-1b"})
    try:
        out = subprocess.run(
            ["bash", str(REPO / "cluster" / "node_start.sh"), "worker", "--agent", "on"],
            env={**os.environ, "TUNER_IMDS_URL": imds.url, "TUNER_DRY_RUN": "1", "RAY_HEAD_IP": "10.0.0.5"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        imds.stop()
    assert "ray start --address=10.0.0.5:6379" in out
    for label in (
        "ray.io/availability-zone=us-east-1b",
        "tuner.io/instance-type=g5.xlarge",
        f"ray.io/market-type={market}",
    ):
        assert label in out
    assert ("python3 -m tuner.spot.agent --provider aws" in out) == agent
