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
MORE_DEMO_CONFIGS = ("fundus_grid_demo.yaml", "fundus_demo.yaml", "petct_demo.yaml")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate an experiment YAML with dotted-path overrides."""
    return load(path, overrides)


def _as_config(config: str | Path | Config, overrides: dict[str, Any] | None) -> Config:
    if isinstance(config, Config):
        return config.with_overrides(overrides) if overrides else config
    return load(config, overrides)


def run(
    config: str | Path | Config,
    overrides: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    quiet: bool = True,
) -> Outcome:
    """One training run (no search) on Ray Train; results go to the store."""
    return execute(_as_config(config, overrides), command="run", name=name, quiet=quiet)


def sweep(
    config: str | Path | Config,
    overrides: dict[str, Any] | None = None,
    *,
    name: str | None = None,
    resume: bool = False,
    quiet: bool = True,
) -> Outcome:
    """An Optuna search over the config's `sweep.space` with Ray Tune."""
    return execute(
        _as_config(config, overrides), command="sweep", name=name, resume=resume, quiet=quiet
    )


def execute_config(
    config: Config, *, command: str, name: str | None, resume: bool, quiet: bool, verbose: bool
) -> Outcome:
    c: Literal["run", "sweep"] = "run" if command == "run" else "sweep"
    return execute(config, command=c, name=name, resume=resume, quiet=quiet, verbose=verbose)


def leaderboard(outcome: Outcome, n: int = 10) -> pd.DataFrame:
    from orchestrator.results import ResultsStore

    return ResultsStore(outcome.path.parent).best(outcome.sweep, n=n)


def print_summary(outcome: Outcome, console: Console) -> None:
    """The leaderboard and where everything is stored."""
    from orchestrator.results import ResultsStore, views

    store = ResultsStore(outcome.path.parent)
    console.print(views.leaderboard_for(store, outcome.sweep))
    console.print(
        f"results: [bold]{outcome.path}[/bold]\n"
        f"  medsweep results best {outcome.sweep} --store {outcome.path.parent}\n"
        f"  medsweep results show RUN_ID --store {outcome.path.parent}"
    )
    journal = outcome.path / "optuna.journal"
    if journal.exists():
        console.print(f"  optuna-dashboard {journal}")


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
