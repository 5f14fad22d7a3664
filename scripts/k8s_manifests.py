"""Kubernetes manifests for the spot cluster, generated from ``cluster/aws.yaml``; and their check.

    python scripts/k8s_manifests.py [--image REGISTRY/tuner:TAG]   # write cluster/k8s/*.yaml
    python scripts/k8s_manifests.py --check                        # validate them; exit 1 naming what is wrong

One source of truth: the worker types (instance types, GPUs, CPUs, min/max), zones, region and
head of ``cluster/aws.yaml`` become a KubeRay ``RayCluster`` (a worker group per type) and
Karpenter ``NodePool``s over the same instance types and zones; ``--check`` fails when the files
differ from what the generator makes of the current ``cluster/aws.yaml`` (drift), when an object
does not validate against the upstream CRD schema of its ``apiVersion`` (``cluster/crds/``) or
carries a field that schema does not declare (the API server would silently drop it), and when a
worker group could run on capacity of another market or asks for more than its instance type has.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tuner.cluster.launcher import load_launcher_config, worker_types  # noqa: E402
from tuner.cost.fallback import SPOT_FIRST  # noqa: E402
from tuner.cost.pricing import Catalog  # noqa: E402
from tuner.spot import labels  # noqa: E402
from tuner.spot.pod import GRACE_S  # noqa: E402

AWS_YAML = "cluster/aws.yaml"
OUT = REPO / "cluster" / "k8s"
CRDS = REPO / "cluster" / "crds"
CRD_FILES = {
    "ray.io/v1/RayCluster": "kuberay-ray.io_rayclusters.yaml",
    "karpenter.sh/v1/NodePool": "karpenter.sh_nodepools.yaml",
    "karpenter.k8s.aws/v1/EC2NodeClass": "karpenter-aws.k8s.aws_ec2nodeclasses.yaml",
}
NAMESPACE = "default"
DEFAULT_IMAGE = "tuner:0.1.0"  # build cluster/Dockerfile and push it; pass --image REGISTRY/tuner:TAG
RAY_VERSION = "2.60.0"  # worker-group priorities need >= 2.56 and autoscaler v2 (KubeRay's validation)
WORKER_SA = "tuner-worker"  # reads its node's labels (zone, market), reaches S3 through Pod Identity
NODE_CLASS = "tuner"
SPOT_POOL, FALLBACK_POOL, BASE_POOL, HEAD_POOL = "tuner-gpu-spot", "tuner-gpu-on-demand", "tuner-gpu-base", "tuner-head"
ON_DEMAND_BASE_NODES = 2  # the design's onDemandBaseCapacity: GPUs that never go away; 0 for spot only
RESERVED_CPU_MILLI = 500  # of each node: kubelet, system daemons, daemonsets (a pod asking all vCPUs never fits)
MEMORY_GIB_PER_VCPU = 3  # a pod's share; every GPU type of the catalog has >= 4 GiB per vCPU
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}  # GPU nodes run GPU pods only
HEAD_VCPUS = 4  # the head's m6i.xlarge (a CPU type, not in the GPU catalog)


def _k8s_name(name: str) -> str:
    return name.replace("_", "-")


def _market(node_type: Mapping[str, Any]) -> str:
    return str(node_type["labels"][labels.MARKET])


def _itype(node_type: Mapping[str, Any]) -> str:
    return str(node_type["labels"][labels.INSTANCE_TYPE])


def _pod_resources(vcpus: float, gpus: float) -> dict[str, Any]:
    memory = f"{int(vcpus * MEMORY_GIB_PER_VCPU)}Gi"
    requests = {"cpu": f"{int(vcpus * 1000) - RESERVED_CPU_MILLI}m", "memory": memory}
    limits = {"memory": memory}
    if gpus:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(int(gpus))
    return {"requests": requests, "limits": limits}


def _node_selector(market: str, itype: str) -> dict[str, str]:
    return {"karpenter.sh/capacity-type": market, "node.kubernetes.io/instance-type": itype}


def worker_group(
    name: str, node_type: Mapping[str, Any], image: str, catalog: Catalog, pool: str, replicas: tuple[int, int]
) -> dict[str, Any]:
    """A worker group for a worker type of cluster/aws.yaml: the same Ray resources and labels, on pods pinned to
    its instance type, market and Karpenter node pool, started through the SIGTERM-to-drain wrapper
    (``tuner.spot.pod``); ``replicas``: (min, max)."""
    itype, market = _itype(node_type), _market(node_type)
    shape = catalog.shape(itype)
    assert shape is not None, f"{itype} is not in the catalog"
    start = f'exec python -m tuner.spot.pod --grace-s {GRACE_S} -- bash -c "exec $KUBERAY_GEN_RAY_START_CMD"'
    return {
        "groupName": name,
        "minReplicas": replicas[0],
        "maxReplicas": replicas[1],
        # Autoscaler v2 prefers the higher between equal fits: spot first, as tuner.cost.fallback ranks them.
        "priority": SPOT_FIRST - 1 if market == "on-demand" else SPOT_FIRST,
        "resources": {k: str(int(v)) for k, v in node_type["resources"].items()},
        "labels": {labels.INSTANCE_TYPE: itype, labels.MARKET: market},
        "rayStartParams": {},
        "template": {
            # Our command; KubeRay's own `ray start` is in $KUBERAY_GEN_RAY_START_CMD.
            "metadata": {"annotations": {"ray.io/overwrite-container-cmd": "true"}},
            "spec": {
                "serviceAccountName": WORKER_SA,
                "terminationGracePeriodSeconds": GRACE_S,  # the drain checkpoint happens inside it
                "nodeSelector": {**_node_selector(market, itype), "karpenter.sh/nodepool": pool},
                "tolerations": [{"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [
                    {
                        "name": "ray-worker",
                        "image": image,
                        # `exec`: the wrapper is the main process, and the kubelet's SIGTERM reaches it.
                        "command": ["/bin/bash", "-c", "--"],
                        "args": [f"ulimit -n 65536; {start}"],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "resources": _pod_resources(shape.vcpus, shape.gpus),
                    }
                ],
            },
        },
    }


def worker_groups(launcher: Mapping[str, Any], image: str, catalog: Catalog) -> list[dict[str, Any]]:
    """One group per worker type, on its market's pool; the on-demand type also gets the base: a group of
    ``ON_DEMAND_BASE_NODES`` pods that always run, on the static pool's nodes."""
    groups = []
    for name, node_type in sorted(worker_types(launcher).items()):
        low, high = int(node_type.get("min_workers", 0)), int(node_type["max_workers"])
        if _market(node_type) == "spot":
            groups.append(worker_group(_k8s_name(name), node_type, image, catalog, SPOT_POOL, (low, high)))
            continue
        groups.append(worker_group(_k8s_name(name), node_type, image, catalog, FALLBACK_POOL, (low, high)))
        if ON_DEMAND_BASE_NODES:
            base = (ON_DEMAND_BASE_NODES, ON_DEMAND_BASE_NODES)
            groups.append(worker_group(f"{_k8s_name(name)}-base", node_type, image, catalog, BASE_POOL, base))
    return groups


def ray_cluster(launcher: Mapping[str, Any], head_itype: str, image: str, catalog: Catalog) -> dict[str, Any]:
    head_shape = catalog.shape(head_itype)
    head_vcpus = head_shape.vcpus if head_shape else HEAD_VCPUS
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": launcher["cluster_name"], "namespace": NAMESPACE},
        "spec": {
            "rayVersion": RAY_VERSION,
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {
                "version": "v2",
                "idleTimeoutSeconds": int(float(launcher.get("idle_timeout_minutes", 5)) * 60),
                "upscalingMode": "Default",
            },
            "headGroupSpec": {
                # The dashboard has no authentication: loopback only; `kubectl port-forward` reaches it there.
                "rayStartParams": {"dashboard-host": "127.0.0.1"},
                "resources": {"CPU": "0"},  # no trial on the head: it runs the driver and must not go away
                "labels": {labels.INSTANCE_TYPE: head_itype, labels.MARKET: "on-demand"},
                "template": {
                    # The head holds the driver and the GCS: Karpenter never moves it voluntarily.
                    "metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}},
                    "spec": {
                        "nodeSelector": {**_node_selector("on-demand", head_itype), "karpenter.sh/nodepool": HEAD_POOL},
                        "containers": [
                            {"name": "ray-head", "image": image, "resources": _pod_resources(head_vcpus, 0)}
                        ],
                    },
                },
            },
            "workerGroupSpecs": worker_groups(launcher, image, catalog),
        },
    }


def _requirements(market: str, itypes: list[str], zones: list[str]) -> list[dict[str, Any]]:
    return [
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [market]},
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": sorted(itypes)},
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones},
    ]


def node_pool(name: str, market: str, itypes: list[str], zones: list[str], gpu: bool, **spec: Any) -> dict[str, Any]:
    template: dict[str, Any] = {
        "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": NODE_CLASS},
        "requirements": _requirements(market, itypes, zones),
        "expireAfter": "Never",  # no forced replacement of a node under a trial (or of the head)
    }
    if gpu:
        template["taints"] = [GPU_TAINT]
    return {
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name},
        "spec": {"template": {"spec": template}, **spec},
    }


def _limits(types: Sequence[Mapping[str, Any]], catalog: Catalog, extra_nodes: int = 0) -> dict[str, str]:
    gpus = cpus = 0.0
    for t in types:
        shape = catalog.shape(_itype(t))
        assert shape is not None
        nodes = int(t["max_workers"]) + extra_nodes
        gpus, cpus = gpus + nodes * shape.gpus, cpus + nodes * shape.vcpus
    return {"cpu": str(int(cpus)), "nvidia.com/gpu": str(int(gpus))}


def karpenter(launcher: Mapping[str, Any], head_itype: str, catalog: Catalog) -> list[dict[str, Any]]:
    zones = launcher["provider"]["availability_zone"].split(",")
    types = worker_types(launcher)
    spot = [t for t in types.values() if _market(t) == "spot"]
    on_demand = [t for t in types.values() if _market(t) == "on-demand"]
    # Only empty nodes go (a node with a Ray pod is never consolidated), after the autoscaler's idle timeout; never
    # one replaced for drift (a new AMI) under a running trial. A spot interruption is not a voluntary disruption:
    # Karpenter drains that node whatever these say, and tuner.spot.pod turns the pods' eviction into a Ray drain.
    disruption = {
        "consolidationPolicy": "WhenEmpty",
        "consolidateAfter": f"{int(float(launcher.get('idle_timeout_minutes', 5)))}m",
        "budgets": [{"nodes": "0", "reasons": ["Drifted"]}],
    }
    node_class = {
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": NODE_CLASS},
        "spec": {
            "role": f"KarpenterNodeRole-{launcher['cluster_name']}",
            "amiSelectorTerms": [{"alias": "al2023@latest"}],  # Karpenter picks the NVIDIA variant on GPU types
            "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": launcher["cluster_name"]}}],
            "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": launcher["cluster_name"]}}],
            # Pods cannot reach the instance metadata (or the node's role): notices come through Karpenter's
            # interruption queue as pod evictions, which tuner.spot.pod turns into Ray drains.
            "metadataOptions": {"httpEndpoint": "enabled", "httpTokens": "required", "httpPutResponseHopLimit": 1},
            "blockDeviceMappings": [
                {"deviceName": "/dev/xvda", "ebs": {"volumeSize": "100Gi", "volumeType": "gp3", "encrypted": True}}
            ],
        },
    }

    def gpu_pool(name: str, market: str, types: list[dict[str, Any]], weight: int) -> dict[str, Any]:
        itypes, limits = [_itype(t) for t in types], _limits(types, catalog)
        return node_pool(name, market, itypes, zones, gpu=True, weight=weight, limits=limits, disruption=disruption)

    pools = [
        gpu_pool(SPOT_POOL, "spot", spot, weight=100),
        gpu_pool(FALLBACK_POOL, "on-demand", on_demand, weight=10),  # below spot (and below it in the RayCluster)
        node_pool(HEAD_POOL, "on-demand", [head_itype], zones, gpu=False, weight=50, disruption=disruption),
    ]
    if ON_DEMAND_BASE_NODES:  # static (alpha: Karpenter's StaticCapacity feature gate): always this many nodes
        base = node_pool(
            BASE_POOL,
            "on-demand",
            [_itype(t) for t in on_demand],
            zones,
            gpu=True,
            replicas=ON_DEMAND_BASE_NODES,
            limits={"nodes": str(ON_DEMAND_BASE_NODES)},
        )
        pools.append(base)
    return [node_class, *pools]


def rbac() -> list[dict[str, Any]]:
    """The workers' service account: read their own node's labels (zone, market), nothing else."""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": WORKER_SA, "namespace": NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "tuner-node-reader"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "tuner-node-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "tuner-node-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": WORKER_SA, "namespace": NAMESPACE}],
        },
    ]


HEADER = "# Generated by `python scripts/k8s_manifests.py` from cluster/aws.yaml: edit that, then rerun.\n"
FILES_HEADERS = {
    "karpenter.yaml": "# Karpenter: the EC2 node class; node pools for spot GPUs, on-demand fallback and base, head.\n",
    "raycluster.yaml": "# KubeRay: the Ray cluster, a worker group per worker type of cluster/aws.yaml.\n",
    "rbac.yaml": "# The workers' service account: read their node's labels (zone, market) for the cost ledger.\n",
}


def manifests(image: str = DEFAULT_IMAGE, launcher_path: str = AWS_YAML) -> dict[str, str]:
    """``{file name: text}`` of cluster/k8s/."""
    launcher, catalog = load_launcher_config(launcher_path), Catalog()
    head_itype = launcher["available_node_types"][launcher["head_node_type"]]["node_config"]["InstanceType"]
    files = {
        "karpenter.yaml": karpenter(launcher, head_itype, catalog),
        "raycluster.yaml": [ray_cluster(launcher, head_itype, image, catalog)],
        "rbac.yaml": rbac(),
    }
    return {
        name: HEADER + FILES_HEADERS[name] + yaml.safe_dump_all(docs, sort_keys=False, width=120)
        for name, docs in files.items()
    }


def objects(directory: Path = OUT) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(directory.glob("*.yaml")):
        for obj in yaml.safe_load_all(path.read_text()):
            if obj:
                yield path.name, obj


@functools.cache
def _schema(api_version: str, kind: str) -> dict[str, Any] | None:
    file = CRD_FILES.get(f"{api_version}/{kind}")
    if file is None:
        return None
    crd = yaml.safe_load((CRDS / file).read_text())
    version = api_version.split("/")[-1]
    schema: dict[str, Any] = next(
        v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version
    )
    return schema


def _path(parts: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


def undeclared(obj: Any, schema: Mapping[str, Any], at: tuple[Any, ...] = ()) -> Iterator[str]:
    """Fields the schema does not declare: a structural CRD's API server prunes them without a word."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(obj, dict) and "properties" in schema:
        for key, value in obj.items():
            if key in schema["properties"]:
                yield from undeclared(value, schema["properties"][key], (*at, key))
            elif at != () or key not in ("apiVersion", "kind", "metadata"):
                yield _path((*at, key))
    elif isinstance(obj, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in obj.items():
            yield from undeclared(value, schema["additionalProperties"], (*at, key))
    elif isinstance(obj, list) and "items" in schema:
        for i, value in enumerate(obj):
            yield from undeclared(value, schema["items"], (*at, i))


def schema_errors(obj: Mapping[str, Any]) -> list[str]:
    """One line per problem: the object, the path in it, what is wrong."""
    schema = _schema(obj["apiVersion"], obj["kind"])
    if schema is None:
        return []
    name = f"{obj['kind']} {obj.get('metadata', {}).get('name', '?')}"
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{name}: {_path(e.absolute_path) or '(top)'}: {e.message}" for e in validator.iter_errors(obj)]
    errors += [f"{name}: {p}: not a field of {obj['apiVersion']} {obj['kind']}" for p in undeclared(obj, schema)]
    return errors


def consistency_errors(directory: Path = OUT) -> list[str]:
    """What the schemas cannot say: markets, GPU counts, the head, the catalog."""
    catalog, errors = Catalog(), []
    for _, obj in objects(directory):
        if obj["kind"] == "RayCluster":
            head = obj["spec"]["headGroupSpec"]
            if head.get("resources", {}).get("CPU") != "0":
                errors.append("RayCluster: the head must offer no CPU to trials (headGroupSpec.resources.CPU: '0')")
            for group in obj["spec"]["workerGroupSpecs"]:
                errors += _group_errors(group, catalog)
    return errors


def _group_errors(group: Mapping[str, Any], catalog: Catalog) -> list[str]:
    name, errors = f"worker group {group['groupName']}", []
    itype, market = group.get("labels", {}).get(labels.INSTANCE_TYPE), group.get("labels", {}).get(labels.MARKET)
    selector = group["template"]["spec"].get("nodeSelector", {})
    allowed = selector.get("karpenter.sh/capacity-type")
    if allowed != market:
        errors.append(f"{name}: labelled {market} but its nodeSelector allows {allowed or 'any'} capacity")
    if selector.get("node.kubernetes.io/instance-type") != itype:
        errors.append(f"{name}: labelled {itype} but its nodeSelector allows another instance type")
    shape = catalog.shape(str(itype))
    if shape is None:
        errors.append(f"{name}: instance type {itype} is not in the catalog (tuner/catalog/prices.csv)")
        return errors
    container = group["template"]["spec"]["containers"][0]
    pod_gpus = int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    ray_gpus = int(group.get("resources", {}).get("GPU", 0))
    if max(pod_gpus, ray_gpus) > shape.gpus:
        errors.append(f"{name}: asks for {max(pod_gpus, ray_gpus)} GPUs, {itype} has {shape.gpus:g}")
    return errors


def check(launcher_path: str = AWS_YAML, directory: Path = OUT) -> list[str]:
    errors = []
    for file, text in manifests(launcher_path=launcher_path).items():
        current = directory / file
        if not current.exists() or current.read_text() != _with_image(text, directory):
            errors.append(f"{current}: differs from what {launcher_path} makes: run python scripts/k8s_manifests.py")
    for file, obj in objects(directory):
        errors += [f"{file}: {e}" for e in schema_errors(obj)]
    return errors + consistency_errors(directory)


def _with_image(text: str, directory: Path) -> str:
    """The generated text with the image the files in ``directory`` name (the one thing a user sets)."""
    current = directory / "raycluster.yaml"
    if not current.exists():
        return text
    image = next(
        c["image"]
        for _, obj in objects(directory)
        if obj["kind"] == "RayCluster"
        for c in obj["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    )
    return text.replace(f"image: {DEFAULT_IMAGE}", f"image: {image}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/k8s_manifests.py", description=__doc__.splitlines()[0])
    p.add_argument("--image", default=DEFAULT_IMAGE, help="the Ray image with this project installed")
    p.add_argument("--check", action="store_true", help="validate cluster/k8s/ instead of writing it")
    args = p.parse_args(argv)
    if args.check:
        errors = check()
        for error in errors:
            print(f"error: {error}", file=sys.stderr)
        if not errors:
            print(f"{OUT.relative_to(REPO)}: valid and in step with {AWS_YAML}")
        return 1 if errors else 0
    OUT.mkdir(exist_ok=True)
    for name, text in manifests(args.image).items():
        (OUT / name).write_text(text)
        print(f"wrote {(OUT / name).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
