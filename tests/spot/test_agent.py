"""Metadata pollers (tuner.spot.notices) and the node agent against a local fake metadata server."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import free_port
from tests.tooling.metadata import MetadataServer as FakeMetadata
from tuner.spot import notices
from tuner.spot.agent import Agent
from tuner.spot.notices import MetadataError, MetadataUnavailable, make_source


@pytest.fixture(params=["aws", "gcp", "azure"])
def fake(request):
    server = FakeMetadata(request.param).start()
    yield server
    server.stop()


def agent_for(fake: FakeMetadata, **kwargs) -> tuple[Agent, list]:
    drains: list = []
    agent = Agent(make_source(fake.provider, fake.url), drain=lambda n: drains.append(n) or True, **kwargs)
    return agent, drains


def test_no_notice(fake) -> None:
    agent, drains = agent_for(fake)
    assert agent.step() is None and drains == []


def test_termination_notice_drains_once_with_the_deadline(fake) -> None:
    agent, drains = agent_for(fake)
    fake.terminate_at = time.time() + 120
    notice = agent.step()
    assert notice is not None and notice.action == "terminate" and notice.provider == fake.provider
    expected = fake.terminate_at if fake.provider != "gcp" else time.time() + notices.GCP_NOTICE_S
    assert notice.deadline_s == pytest.approx(expected, abs=2)
    agent.step()
    assert len(drains) == 1


@pytest.mark.parametrize("mode", ["malformed", "500"])
def test_bad_answers_never_drain(fake, mode: str) -> None:
    fake.terminate_at = time.time() + 120 if mode == "500" else None
    fake.mode = mode
    agent, drains = agent_for(fake)
    with pytest.raises(MetadataError):
        agent.source.poll()
    assert agent.step() is None and drains == [] and agent.errors == 1
    fake.mode, fake.terminate_at = "ok", time.time() + 60  # the service recovers: the agent is alive
    assert agent.step() is not None and len(drains) == 1


def test_slow_answer_times_out_without_draining() -> None:
    fake = FakeMetadata("gcp").start()
    try:
        fake.mode, fake.terminate_at = "slow", time.time() + 30
        agent, drains = agent_for(fake)
        started = time.monotonic()
        assert agent.step() is None and drains == []
        assert time.monotonic() - started < notices.HTTP_TIMEOUT_S + 1.5
    finally:
        fake.stop()


@pytest.mark.parametrize("provider", ["aws", "gcp", "azure"])
def test_no_metadata_service_idles_quietly(provider: str, caplog) -> None:
    source = make_source(provider, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MetadataUnavailable):
        source.poll()
    agent = Agent(source, drain=lambda n: pytest.fail("drained off-cloud"))
    with caplog.at_level("INFO"):
        for _ in range(3):
            assert agent.step() is None
    assert sum("no " in r.message and "metadata service" in r.message for r in caplog.records) == 1
    assert not [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]


def test_aws_token_expiry_is_renewed() -> None:
    fake = FakeMetadata("aws").start()
    try:
        agent, drains = agent_for(fake)
        agent.step()
        fake.revoke_tokens()  # the token expired or was revoked: 401
        fake.terminate_at = time.time() + 120
        assert agent.step() is not None and len(drains) == 1
        assert sum(r == "PUT /latest/api/token" for r in fake.requests) == 2
    finally:
        fake.stop()


def test_aws_rebalance_drains_only_when_configured() -> None:
    fake = FakeMetadata("aws").start()
    try:
        fake.rebalance = True
        quiet, quiet_drains = agent_for(fake)
        assert quiet.step().action == "rebalance" and quiet_drains == []
        eager, eager_drains = agent_for(fake, drain_on_rebalance=True)
        eager.step()
        assert [n.action for n in eager_drains] == ["rebalance"]
    finally:
        fake.stop()


def test_agent_loop_polls_at_its_interval() -> None:
    fake = FakeMetadata("azure").start()
    try:
        agent, drains = agent_for(fake, interval_s=0.1)
        stop = threading.Event()
        thread = threading.Thread(target=agent.run, args=(stop,))
        thread.start()
        deadline = time.monotonic() + 5
        while len(fake.requests) < 3:  # it polls with no notice, at its interval
            assert time.monotonic() < deadline
            time.sleep(0.01)
        fake.terminate_at = time.time() + 30
        deadline = time.monotonic() + 5
        while not drains and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(5)
        assert len(drains) == 1 and 4 <= len(fake.requests)
    finally:
        fake.stop()
