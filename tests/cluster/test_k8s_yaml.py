"""cluster/k8s/: the upstream CRD schemas (jsonschema), the rules they cannot state, one source of truth with
cluster/aws.yaml and the catalog, and Ray's own KubeRay translation of the RayCluster into node types."""

from __future__ import annotations

import copy
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tuner.cluster.launcher import load_launcher_config, worker_types
from tuner.cluster.twin import twin_config
from tuner.config import ClusterConfig, ConfigError
from tuner.run.driver import check_priced
from tuner.spot import labels
from tuner.spot.pod import GRACE_S

_spec = importlib.util.spec_from_file_location("k8s_manifests", REPO / "scripts" / "k8s_manifests.py")
assert _spec is not None and _spec.loader is not None
k8s = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(k8s)

K8S = REPO / "cluster" / "k8s"


def objects(kind: str, directory: Path = K8S) -> list[dict[str, Any]]:
    return [obj for _, obj in k8s.objects(directory) if obj["kind"] == kind]


def ray_cluster(directory: Path = K8S) -> dict[str, Any]:
    (found,) = objects("RayCluster", directory)
    return found


def test_the_shipped_manifests_pass_the_check() -> None:
    """In step with cluster/aws.yaml, valid against their CRD schemas, no field the API server would drop."""
    assert k8s.check() == []
    kinds = sorted({obj["kind"] for _, obj in k8s.objects()})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "EC2NodeClass", "NodePool", "RayCluster", "ServiceAccount"]
    assert all(k8s.schema_errors(obj) == [] for _, obj in k8s.objects())


def test_spot_pools_are_diversified_and_every_pool_is_ordered() -> None:
    pools = {p["metadata"]["name"]: p["spec"] for p in objects("NodePool")}
    req = {r["key"]: r["values"] for r in pools["tuner-gpu-spot"]["template"]["spec"]["requirements"]}
    assert req["karpenter.sh/capacity-type"] == ["spot"]
    assert len(req["node.kubernetes.io/instance-type"]) >= 10 and len(req["topology.kubernetes.io/zone"]) >= 3
    assert pools["tuner-gpu-spot"]["weight"] > pools["tuner-gpu-on-demand"]["weight"]
    base = pools["tuner-gpu-base"]  # static: Karpenter's rules (CEL, not checked by jsonschema)
    assert base["replicas"] == k8s.ON_DEMAND_BASE_NODES == 2 and "weight" not in base
    assert set(base["limits"]) == {"nodes"}
    for name, pool in pools.items():
        assert pool["template"]["spec"]["expireAfter"] == "Never", name  # no forced replacement under a trial
        if "replicas" not in pool:  # only empty nodes are consolidated, none replaced for drift
            assert pool["disruption"]["consolidationPolicy"] == "WhenEmpty", name
            assert {"nodes": "0", "reasons": ["Drifted"]} in pool["disruption"]["budgets"], name


def test_worker_groups_are_the_worker_types_of_aws_yaml() -> None:
    """Ray's KubeRay translation of the RayCluster gives the node types cluster/aws.yaml has, type for type, plus
    the on-demand base (the design's onDemandBaseCapacity, on the static pool)."""
    aws = worker_types(load_launcher_config("cluster/aws.yaml"))
    kube = worker_types(load_launcher_config("cluster/k8s/raycluster.yaml"))
    assert set(kube) == {name.replace("_", "-") for name in aws} | {"ondemand-g5-base"} and len(aws) >= 10
    for name, aws_type in aws.items():
        kube_type = kube[name.replace("_", "-")]
        assert kube_type["labels"] == aws_type["labels"], name
        assert {k: v for k, v in kube_type["resources"].items() if k != "memory"} == aws_type["resources"], name
        assert (kube_type["min_workers"], kube_type["max_workers"]) == (
            aws_type["min_workers"],
            aws_type["max_workers"],
        )
    base = kube["ondemand-g5-base"]
    assert base["min_workers"] == base["max_workers"] == k8s.ON_DEMAND_BASE_NODES
    assert base["resources"] == kube["ondemand-g5"]["resources"] and base["labels"] == kube["ondemand-g5"]["labels"]
    spot = [t for t in kube.values() if t["labels"][labels.MARKET] == "spot"]
    assert {t["resources"]["GPU"] for t in spot} >= {1, 4}  # single- and multi-GPU
    assert all(t["priority"] > kube["ondemand-g5"]["priority"] for t in spot)  # spot first


def test_pods_are_pinned_to_their_market_and_pool_and_drain_within_their_grace_period() -> None:
    cluster = ray_cluster()
    head = cluster["spec"]["headGroupSpec"]
    assert head["resources"] == {"CPU": "0"} and head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert head["template"]["metadata"]["annotations"]["karpenter.sh/do-not-disrupt"] == "true"
    pools = {p["metadata"]["name"]: p for p in objects("NodePool")}
    for group in cluster["spec"]["workerGroupSpecs"]:
        pod = group["template"]
        selector = pod["spec"]["nodeSelector"]
        assert selector["karpenter.sh/capacity-type"] == group["labels"][labels.MARKET]
        pool = pools[selector["karpenter.sh/nodepool"]]["spec"]["template"]["spec"]
        allowed = {r["key"]: r["values"] for r in pool["requirements"]}
        assert allowed["karpenter.sh/capacity-type"] == [group["labels"][labels.MARKET]], group["groupName"]
        assert group["labels"][labels.INSTANCE_TYPE] in allowed["node.kubernetes.io/instance-type"]
        assert pod["spec"]["terminationGracePeriodSeconds"] == GRACE_S
        assert f"tuner.spot.pod --grace-s {GRACE_S}" in pod["spec"]["containers"][0]["args"][0]
        # Karpenter would not evict a do-not-disrupt pod when it drains an interrupted node: no SIGTERM, no drain.
        assert pod["metadata"]["annotations"] == {"ray.io/overwrite-container-cmd": "true"}


def test_the_twin_can_be_derived_from_the_ray_cluster() -> None:
    from ray.autoscaler._private.util import validate_config

    cfg = ClusterConfig(name="local_spot", launcher_config="cluster/k8s/raycluster.yaml", max_workers_per_type=1)
    launcher = load_launcher_config(cfg.launcher_config)
    twin = twin_config(launcher, cfg)
    validate_config(twin)
    spot_g5 = twin["available_node_types"]["spot-g5"]
    assert spot_g5["labels"][labels.ZONE] in launcher["provider"]["availability_zone"].split(",")
    assert spot_g5["labels"][labels.REGION] == "us-east-1"
    assert twin["available_node_types"]["ondemand-g5-base"]["min_workers"] == 1  # the base, capped for this machine
    assert all("memory" not in t["resources"] for t in twin["available_node_types"].values())  # Ray's fake nodes


@pytest.fixture
def copy_of_k8s(tmp_path: Path) -> Path:
    shutil.copytree(K8S, tmp_path / "k8s")
    return tmp_path / "k8s"


def edit(directory: Path, file: str, change) -> None:
    path = directory / file
    docs = list(yaml.safe_load_all(path.read_text()))
    for doc in docs:
        change(doc)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def group(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == name)


def test_an_invalid_edit_is_named_by_its_path(copy_of_k8s: Path) -> None:
    def break_it(doc: dict[str, Any]) -> None:
        group(doc, "spot-g5")["maxReplicas"] = "eight"
        group(doc, "spot-g6")["template"]["spec"]["terminationGracePeriodSecond"] = 90  # a typo: pruned

    edit(copy_of_k8s, "raycluster.yaml", break_it)
    errors = k8s.check(directory=copy_of_k8s)
    g5 = [g["groupName"] for g in ray_cluster(copy_of_k8s)["spec"]["workerGroupSpecs"]].index("spot-g5")
    where = f"raycluster.yaml: RayCluster tuner-spot: spec.workerGroupSpecs[{g5}].maxReplicas"
    assert f"{where}: 'eight' is not of type 'integer'" in errors
    assert any("template.spec.terminationGracePeriodSecond: not a field of ray.io/v1 RayCluster" in e for e in errors)
    assert any("differs from what cluster/aws.yaml makes" in e for e in errors)


def test_what_the_schemas_cannot_say_is_checked(copy_of_k8s: Path) -> None:
    def break_it(doc: dict[str, Any]) -> None:
        if doc["kind"] != "RayCluster":
            return
        del group(doc, "spot-g5")["template"]["spec"]["nodeSelector"]["karpenter.sh/capacity-type"]  # any capacity
        group(doc, "spot-g6")["resources"]["GPU"] = "2"  # g6.xlarge has one
        group(doc, "spot-p3")["labels"][labels.INSTANCE_TYPE] = "p9.huge"
        group(doc, "spot-p3")["template"]["spec"]["nodeSelector"]["node.kubernetes.io/instance-type"] = "p9.huge"
        doc["spec"]["headGroupSpec"]["resources"]["CPU"] = "4"

    edit(copy_of_k8s, "raycluster.yaml", break_it)
    errors = k8s.consistency_errors(directory=copy_of_k8s)
    assert errors == [
        "RayCluster: the head must offer no CPU to trials (headGroupSpec.resources.CPU: '0')",
        "worker group spot-g5: labelled spot but its nodeSelector allows any capacity",
        "worker group spot-g6: asks for 2 GPUs, g6.xlarge has 1",
        "worker group spot-p3: instance type p9.huge is not in the catalog (tuner/catalog/prices.csv)",
    ]


def test_a_worker_group_of_an_unpriced_type_is_refused_in_one_line(copy_of_k8s: Path) -> None:
    edit(
        copy_of_k8s,
        "raycluster.yaml",
        lambda doc: group(doc, "spot-p3")["labels"].update({labels.INSTANCE_TYPE: "p9.huge"}),
    )
    path = str(copy_of_k8s / "raycluster.yaml")
    with pytest.raises(ConfigError, match=r"worker type spot-p3: instance type p9.huge is not in the catalog"):
        check_priced(load_launcher_config(path), path)


def test_drift_from_aws_yaml_is_caught(tmp_path: Path) -> None:
    aws = yaml.safe_load((REPO / "cluster" / "aws.yaml").read_text())
    changed = copy.deepcopy(aws)
    changed["available_node_types"]["spot_g5"]["max_workers"] = 3  # the group's maxReplicas, the pool's limits
    (tmp_path / "aws.yaml").write_text(yaml.safe_dump(changed))
    errors = k8s.check(launcher_path=str(tmp_path / "aws.yaml"))
    assert [e.split(": ")[0] for e in errors] == [str(K8S / "karpenter.yaml"), str(K8S / "raycluster.yaml")]
