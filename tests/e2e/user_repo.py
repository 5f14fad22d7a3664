"""A user's own repository, written to a directory outside this checkout: a package the platform has never
seen (a trainer, a space, trainers that go wrong in every way the issue lists) and its search YAMLs."""

from __future__ import annotations

from pathlib import Path

TRAIN = '''
"""Fit y = 3x - 1 from noisy samples with a plain loop; the platform sees it only through tuner.session."""

from pathlib import Path

import torch

from tuner import session

NOT_A_FUNCTION = 42


def fit(config, settings):
    shipped = float("runtime_resources" in Path(__file__).as_posix())  # ray's copy of this package on a cluster
    torch.manual_seed(settings["seed"])
    x = torch.linspace(-1, 1, 256).unsqueeze(1)
    y = 3 * x - 1 + 0.1 * torch.randn_like(x)
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    ckpt = session.get_checkpoint()
    start = 0
    if ckpt is not None:
        state = ckpt.load()
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["iteration"]
    for iteration in range(start, settings["iterations"]):
        for _ in range(10):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            session.step(lambda: {"model": model.state_dict(), "opt": opt.state_dict(), "iteration": iteration})
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "iteration": iteration + 1}
        session.report({"mse": loss.item(), "slope": model.weight.item(), "shipped": shipped}, checkpoint=state)


def fit_keywords(params, *, iterations=6, seed=0):
    """The same loop written the ordinary way: the workload's keys come as keywords."""
    fit(params, {"iterations": iterations, "seed": seed})


def wrong_signature(config):
    pass
'''

SPACE = """
def space(trial):
    trial.suggest_float("lr", 0.05, 0.5, log=True)
"""

CASES = '''
"""Trainers that go wrong; the space picks one per trial (trial.number), the YAML names CASES."""

import threading

from tuner import session

CASES = ["raises", "unsaveable", "no_step_hook"]  # each fails (or finishes) its own trial


def space(trial):
    trial.suggest_float("x", 0.0, 1.0)
    return {"case": CASES[trial.number % len(CASES)]}


def no_metric(trial):
    """Reports that lack the search's metric: no trial of the search can ever finish."""
    trial.suggest_float("x", 0.0, 1.0)
    return {"case": "no_metric"}


def text_metric(trial):
    trial.suggest_float("x", 0.0, 1.0)
    return {"case": "text_metric"}


def helper(n):
    raise ValueError(f"bad batch {n}")


def raises_at_once(trial):
    """A trainer that raises before its first report: every attempt of every trial would."""
    trial.suggest_float("x", 0.0, 1.0)
    return {"case": "raises_at_once"}


def fit(config, settings):
    case = config["case"]
    for i in range(1, 4):
        if case == "raises_at_once" or (case == "raises" and i > 1):  # "raises": after its first report
            helper(i)
        if case == "raises":
            session.report({"loss": 1.0 / i})
        elif case == "no_metric":
            session.report({"iteration_loss": 0.5})
        elif case == "text_metric":
            session.report({"loss": "low"})
        elif case == "unsaveable":  # its first report has nothing to save; the second cannot be saved
            session.report({"loss": 0.5}, checkpoint={"lock": threading.Lock()} if i > 1 else None)
        else:  # no_step_hook: reports (with checkpoints) but never calls session.step
            session.report({"loss": 1.0 / i}, checkpoint={"i": i})
'''

MINE = """# Run with: python -m tuner.run --config-dir conf +search=mine
name: mine
trainer: mypkg.train:fit
space: mypkg.space:space
metric: mse
mode: min
max_t: ${.workload.iterations}
workload:
  iterations: 6
  seed: 0
tune:
  num_samples: 3
"""

CASES_YAML = """# Run with: python -m tuner.run --config-dir conf +search=cases
name: cases
trainer: mypkg.cases:fit
space: mypkg.cases:space
metric: loss
mode: min
max_t: 3
tune:
  num_samples: 3
"""


def write(root: Path) -> Path:
    (root / "mypkg").mkdir(parents=True)
    (root / "conf" / "search").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    for name, text in (("train", TRAIN), ("space", SPACE), ("cases", CASES)):
        (root / "mypkg" / f"{name}.py").write_text(text.lstrip())
    (root / "conf" / "search" / "mine.yaml").write_text(MINE)
    (root / "conf" / "search" / "cases.yaml").write_text(CASES_YAML)
    return root
