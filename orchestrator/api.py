"""The public Python API for scripted sweeps; the CLI is a thin layer over it.

```python
import orchestrator as ms

for alpha in (0.0, 0.05, 0.1):
    out = ms.run("configs/fundus_demo.yaml", overrides={"train.label_smoothing": alpha})
    print(alpha, out.best()["objective"].iloc[0])
```
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from orchestrator.config import Config, load
from orchestrator.engine import Outcome, execute
from orchestrator.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

REPO_ROOT = Path(__file__).resolve().parent.parent
# The demo sweeps, run in this order (each synthesises its data on first use).
# One short sweep per task family (`make demo`), then the rest (`make demo-all`).
DEMO_CONFIGS = ("fundus_cv_demo.yaml", "detection_demo.yaml", "abn_demo.yaml", "glow_demo.yaml")
MORE_DEMO_CONFIGS = (
    "fundus_grid_demo.yaml",
    "fundus_demo.yaml",
    "petct_demo.yaml",
    "abn_compare_demo.yaml",
)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate an experiment YAML with dotted-path overrides."""
    return load(path, overrides)


def _as_config(config: str | Path | Config, overrides: dict[str, Any] | None) -> Config:
    if isinstance(config, Config):
        return config.with_overrides(overrides) if overrides else config
    return load(config, overrides)


class Result(Outcome):
    """What `run` and `sweep` return: the `Outcome` plus its results, and a table in Jupyter."""

    @classmethod
    def of(cls, outcome: Outcome) -> Result:
        return cls(**vars(outcome))

    @property
    def store(self) -> Any:
        from orchestrator.results import ResultsStore

        return ResultsStore(self.path.parent)

    def best(self, n: int = 10) -> pd.DataFrame:
        """The top-n trials, best first (as `leaderboard`)."""
        return self.store.best(self.sweep, n=n)

    def report(self, out: str | Path) -> Path:
        """Write the sweep's self-contained HTML report (`medsweep report`)."""
        from orchestrator.report import build_report

        return Path(build_report(self.store, self.sweep, out)["out"])

    def _repr_html_(self) -> str:
        from orchestrator.report.html import board_html
        from orchestrator.results import views

        board = views.best(self.store, self.sweep, n=20)
        failed = f", {self.errors} failed" if self.errors else ""
        return (
            f"<p><b>{self.sweep}</b>: {self.trials} trial(s){failed}; results in "
            f"<code>{self.path}</code></p>{board_html(board)}"
        )


def _check_name(config: Config, command: str, name: str | None, resume: bool, api: bool) -> None:
    """Refuse a taken name (or a resume of nothing) in the words of the caller: keyword arguments
    for the Python API, flags for the CLI. The engine checks again (a racing process)."""
    from orchestrator.engine import default_name
    from orchestrator.results import ResultsStore

    c: Literal["run", "sweep"] = "run" if command == "run" else "sweep"
    sweep = name or default_name(config, c)
    root = ResultsStore(config.experiment.store.root).root
    exists = (root / sweep / "sweep.json").exists()
    if resume and not exists:
        how = "ms.sweep(...) without resume=True" if api else "the command without --resume"
        raise UserError(f"nothing to resume: no sweep {sweep!r} in {root}; start it with {how}")
    if not exists or resume:
        return
    new = "pass another name= for a new one" if api else "give a new one with --name NEW_NAME"
    again = (
        f"ms.sweep(..., name={sweep!r}, resume=True)"
        if api
        else f"`medsweep sweep {config.source} --name {sweep} --resume`"
    )
    keep = f"continue it with {again}, or {new}" if c == "sweep" else new
    raise UserError(
        f"{'a run' if c == 'run' else 'a sweep'} named {sweep!r} already exists in {root}; "
        f"{keep} (nothing was changed)",
        where="name",
    )


def run(
    config: str | Path | Config,
    overrides: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    quiet: bool = True,
) -> Result:
    """One training run (no search) on Ray Train; results go to the store."""
    resolved = _as_config(config, overrides)
    _check_name(resolved, "run", name, False, api=True)
    return Result.of(execute(resolved, command="run", name=name, quiet=quiet))


def sweep(
    config: str | Path | Config,
    overrides: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    resume: bool = False,
    quiet: bool = True,
) -> Result:
    """An Optuna search over the config's `sweep.space` with Ray Tune."""
    resolved = _as_config(config, overrides)
    _check_name(resolved, "sweep", name, resume, api=True)
    return Result.of(execute(resolved, command="sweep", name=name, resume=resume, quiet=quiet))


def execute_config(
    config: Config, *, command: str, name: str | None, resume: bool, quiet: bool, verbose: bool
) -> Outcome:
    c: Literal["run", "sweep"] = "run" if command == "run" else "sweep"
    _check_name(config, c, name, resume, api=False)
    return execute(config, command=c, name=name, resume=resume, quiet=quiet, verbose=verbose)


def leaderboard(outcome: Outcome, n: int = 10) -> pd.DataFrame:
    from orchestrator.results import ResultsStore

    return ResultsStore(outcome.path.parent).best(outcome.sweep, n=n)


def print_summary(outcome: Outcome, console: Console, failures: bool = True) -> None:
    """The leaderboard (with the causes of failed trials unless `failures` is off) and where
    everything is stored, with next steps that run as printed."""
    import shlex

    from orchestrator.results import ResultsStore, views

    store = ResultsStore(outcome.path.parent)
    console.print(views.leaderboard_for(store, outcome.sweep, failures=failures))
    console.print(f"results: [bold]{outcome.path}[/bold]")
    for hint in next_steps(outcome):
        console.print(f"  {shlex.join(hint)}", markup=False, highlight=False)


def next_steps(outcome: Outcome) -> list[list[str]]:
    """The commands printed after a run or sweep (argv lists; the tests run each of them)."""
    root, sweep = str(outcome.path.parent), outcome.sweep
    steps = [  # the leaderboard above prints `results show` of the best trial
        ["medsweep", "results", "best", sweep, "--store", root],
        ["medsweep", "report", sweep, "--store", root, "--out", f"{sweep}-report.html"],
    ]
    if (outcome.path / "optuna.journal").exists():
        steps.append(["medsweep", "dashboard", sweep, "--store", root])
    return steps


def demo(
    store: str = "medsweep_results", quiet: bool = False, verbose: bool = False, all: bool = False
) -> list[Outcome]:
    """Synthetic data, then one real Optuna sweep per demo config on an embedded (or joined) Ray."""
    import sys

    from rich.console import Console

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
    outcomes = []
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for file in DEMO_CONFIGS + (MORE_DEMO_CONFIGS if all else ()):
        path = REPO_ROOT / "configs" / file
        if not path.exists():
            raise UserError("demo config not found (run from a clone of the repo)", source=path)
        config = load(path, {"store.root": store})
        name = f"{config.experiment.name}-{stamp}"
        sw = config.experiment.sweep
        console.rule(f"[bold]{name}[/bold]: task {config.experiment.task}, {sw.num_samples} trials")
        outcome = execute(config, command="sweep", name=name, quiet=quiet, verbose=verbose)
        print_summary(outcome, console)
        outcomes.append(outcome)
    return outcomes
