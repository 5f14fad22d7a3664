"""Bad input gets one clear line on stderr and exit status 2, before anything starts."""

from __future__ import annotations

import pytest

from tests.conftest import FAST, free_port, run_cli


def assert_one_line_error(proc, expected: str, status: int = 2) -> None:
    assert proc.returncode == status, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and expected in lines[-1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_missing_search_lists_the_searches() -> None:
    assert_one_line_error(run_cli([]), "add +search=NAME, one of: mlp, resnet")


def test_negative_budget() -> None:
    assert_one_line_error(run_cli(["+search=mlp", "search.tune.num_samples=-3"]), "num_samples=-3: must be > 0")


def test_a_sampler_that_cannot_run_several_objectives() -> None:
    proc = run_cli(["+search=resnet_cost", "search/searcher=cmaes"])
    assert_one_line_error(proc, "search.searcher=CmaEsSampler cannot optimise several objectives")


@pytest.mark.parametrize(
    "override,message",
    [("+search=nope", "Could not find 'search/nope'"), ("search.tune.nm_samples=2", "Key 'nm_samples' not in")],
)
def test_hydra_rejects_unknown_names(override: str, message: str) -> None:
    args = [override] if override.startswith("+search") else ["+search=mlp", override]
    proc = run_cli(args)
    assert proc.returncode == 1 and message in proc.stderr


def s3_args(bucket: str, endpoint: str) -> list[str]:
    return ["+search=mlp", *FAST, "storage=s3", f"storage.bucket={bucket}", f"storage.endpoint_url={endpoint}"]


def test_missing_bucket(s3_server) -> None:
    proc = run_cli(s3_args("no-such-bucket", s3_server.endpoint_url), env=s3_server.env)
    assert_one_line_error(proc, "S3 bucket 'no-such-bucket'")
    assert "does not exist" in proc.stderr


def test_wrong_credentials(s3_server) -> None:
    bucket = s3_server.make_bucket()
    env = {**s3_server.env, "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    proc = run_cli(s3_args(bucket, s3_server.endpoint_url), env=env)
    assert_one_line_error(proc, f"S3 bucket '{bucket}'")
    assert "wrong-secret" not in proc.stdout + proc.stderr


def test_unreachable_s3() -> None:
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"}
    proc = run_cli(s3_args("some-bucket", f"http://127.0.0.1:{free_port()}"), env=env)
    assert_one_line_error(proc, "is unreachable")


def test_a_cluster_whose_head_does_not_answer(s3_server) -> None:
    """cluster=k8s where no head answers (off the cluster, a port-forward gone): one line in seconds, not Ray's
    minutes of retries (it waited past 5 min before the probe)."""
    bucket = s3_server.make_bucket()
    where = f"127.0.0.1:{free_port()}"
    args = [*s3_args(bucket, s3_server.endpoint_url), "cluster=k8s", f"cluster.address={where}"]
    proc = run_cli(args, env=s3_server.env, timeout_s=120)
    assert_one_line_error(proc, "cluster=k8s: no Ray head answers at ")
    assert f":{where.split(':')[1]}" in proc.stderr and "Connection refused" in proc.stderr


def test_malformed_endpoint() -> None:
    proc = run_cli(["+search=mlp", "storage=s3", "storage.bucket=ok-bucket", "storage.endpoint_url=127.0.0.1:9000"])
    assert_one_line_error(proc, "write it as http(s)://host:port")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["+search=mlp", "search.space=tests.spaces:raising_space"],
            "search.space='tests.spaces:raising_space' cannot draw a configuration "
            "(KeyError: 'no such hyperparameter table')",
        ),
        (
            ["--config-dir", "examples/conf", "+search=regression", 'search.space.lr="uniform(1, 2)"'],
            "search.space.lr='uniform(1, 2)': HydraException while evaluating 'uniform(1, 2)': "
            "Unknown function 'uniform'",
        ),
        (
            ["--config-dir", "examples/conf", "+search=regression", 'search.space.lr="interval(3, 1)"'],
            "search.space.lr='interval(3, 1)': ",
        ),
    ],
)
def test_a_space_that_cannot_draw(args: list[str], message: str) -> None:
    from tests.conftest import REPO

    args = [a.replace("examples/conf", str(REPO / "examples" / "conf")) for a in args]
    assert_one_line_error(run_cli(args, env={"PYTHONPATH": str(REPO)}), message)  # run_cli's cwd is elsewhere
