"""The `medsweep` command. A thin layer over the Python API; heavy imports stay inside commands
so that `medsweep --help` answers quickly.

Exit codes: 0 success, 2 bad input (config, data, arguments), 1 a failure while running.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as exit 2 with one clear line (its default too)."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    if stderr:  # messages are never hard-wrapped: they stay one greppable paragraph
        return Console(stderr=True, highlight=False, soft_wrap=True)
    # Logs and CI have no terminal width; 140 columns keeps leaderboards on one line per row.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n")


# --- commands ------------------------------------------------------------------------------------
def cmd_tasks(args: argparse.Namespace) -> int:
    from orchestrator.registry import get_task, task_names

    rows = []
    for name in task_names():
        cls = get_task(name)
        rows.append(
            {
                "task": name,
                "metric": cls.default_metric,
                "mode": cls.default_mode,
                "description": cls.description,
            }
        )
    if args.json:
        _print_json(rows)
        return EXIT_OK
    from rich.table import Table

    table = Table(title="registered tasks")
    for col in ("task", "metric", "mode", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("task", "metric", "mode", "description")))
    _console().print(table)
    return EXIT_OK


def _load(args: argparse.Namespace) -> Any:
    from orchestrator.config import load, parse_overrides

    return load(args.config, parse_overrides(args.set))


def cmd_validate(args: argparse.Namespace) -> int:
    from orchestrator import space
    from orchestrator.registry import get_task

    config = _load(args)
    if args.check_data:
        get_task(config.experiment.task)(config.task).check_data()
    if args.json:
        _print_json(config.to_dict())
        return EXIT_OK
    con = _console()
    sw = config.experiment.sweep
    con.print(
        f"[green]OK[/green] {args.config}: task [bold]{config.experiment.task}[/bold], "
        f"metric {config.metric} ({config.mode}), {len(sw.space)} searched fields, "
        f"space size {space.size(sw.space)}"
    )
    if args.resolved:
        con.print(config.to_yaml(), markup=False)
    return EXIT_OK


def _execute(args: argparse.Namespace, command: str) -> int:
    from orchestrator import api

    outcome = api.execute_config(
        _load(args),
        command=command,
        name=args.name,
        resume=getattr(args, "resume", False),
        quiet=args.quiet,
        verbose=args.verbose,
    )
    api.print_summary(outcome, _console())
    if outcome.errors:
        _console(stderr=True).print(
            f"[red]{outcome.errors} of {outcome.trials} trial(s) failed[/red]; "
            f"see `medsweep results ls` and the error column of `medsweep results show RUN`"
        )
        return EXIT_FAIL
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(args, "run")


def cmd_sweep(args: argparse.Namespace) -> int:
    return _execute(args, "sweep")


def cmd_results(args: argparse.Namespace) -> int:
    from orchestrator.results import ResultsStore, views

    store = ResultsStore(args.store)
    action: Callable[..., Any] = {
        "ls": lambda: views.ls(store),
        "show": lambda: views.show(store, args.run),
        "best": lambda: views.best(store, args.sweep, n=args.n),
        "compare": lambda: views.compare(store, args.sweeps),
        "export": lambda: views.export(store, args.sweep, fmt=args.format, out=Path(args.out)),
        "compact": lambda: store.compact(args.sweep),
    }[args.results_cmd]
    data = action()
    if args.json:
        _print_json(data)
    else:
        views.render(args.results_cmd, data, _console())
    return EXIT_OK


def cmd_eval(args: argparse.Namespace) -> int:
    from orchestrator.evaluate import eval_classification, render_classification

    result = eval_classification(Path(args.pred), args.group, args.threshold)
    if args.json:
        _print_json(result)
    else:
        render_classification(result, _console())
    return EXIT_OK


def cmd_eval_detection(args: argparse.Namespace) -> int:
    from orchestrator.evaluate import eval_detection, render_detection

    result = eval_detection(
        Path(args.gt),
        Path(args.pred),
        iou=args.iou,
        threshold=args.threshold,
        skip_invalid=args.skip_invalid,
    )
    if args.json:
        _print_json(result)
    else:
        render_detection(result, _console())
    return EXIT_OK


def cmd_data_synth(args: argparse.Namespace) -> int:
    from orchestrator.registry import find_synth

    cls = find_synth(args.task)
    path = cls.synthesize(Path(args.out), n=args.n, size=args.size, seed=args.seed)
    _console().print(f"wrote {args.n} synthetic {args.task} images: {path}")
    return EXIT_OK


def cmd_data_tool(args: argparse.Namespace) -> int:
    from orchestrator.registry import run_data_tool

    return run_data_tool(args.data_cmd, list(args.tool_args))


def cmd_demo(args: argparse.Namespace) -> int:
    from orchestrator import api

    outcomes = api.demo(store=args.store, quiet=args.quiet, verbose=args.verbose)
    return EXIT_FAIL if any(o.errors for o in outcomes) else EXIT_OK


# --- parser --------------------------------------------------------------------------------
def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="experiment YAML file")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="override a field, e.g. --set train.lr=3e-4 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="medsweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("tasks", help="list registered tasks")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("validate", help="validate a config (and optionally its data)")
    _add_config_args(p)
    p.add_argument("--resolved", action="store_true", help="print the resolved config")
    p.add_argument("--check-data", action="store_true", help="also check the dataset files")
    p.add_argument("--json", action="store_true", help="print the resolved config as JSON")
    p.set_defaults(func=cmd_validate)

    for name, func, text in (
        ("run", cmd_run, "one training run on Ray Train"),
        ("sweep", cmd_sweep, "an Optuna search with Ray Tune"),
    ):
        p = sub.add_parser(name, help=text)
        _add_config_args(p)
        p.add_argument("--name", help="name in the results store (default from the config)")
        p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
        p.add_argument("--verbose", action="store_true", help="also stream Ray worker logs")
        if name == "sweep":
            p.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
        p.set_defaults(func=func)

    _add_results_parser(sub)
    _add_eval_parser(sub)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_cmd", required=True, parser_class=_Parser)
    s = dsub.add_parser("synth", help="write a synthetic dataset for a task")
    s.add_argument("task")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=400)
    s.add_argument("--size", type=int, default=96)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_data_synth)
    from orchestrator.registry import data_tools

    for tool, target in sorted(data_tools().items()):
        t = dsub.add_parser(
            tool, help=f"{tool} tool ({target.split(':')[0]}); see its --help", add_help=False
        )
        t.add_argument("tool_args", nargs=argparse.REMAINDER)
        t.set_defaults(func=cmd_data_tool)

    p = sub.add_parser("demo", help="synthetic data + a real sweep on an embedded Ray")
    p.add_argument("--store", default="medsweep_results")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--verbose", action="store_true", help="also stream Ray worker logs")
    p.set_defaults(func=cmd_demo)
    return parser


def _add_results_parser(sub: Any) -> None:
    p = sub.add_parser("results", help="query the results store")
    p.add_argument("--store", default="medsweep_results", help="results store folder")
    rsub = p.add_subparsers(dest="results_cmd", required=True, parser_class=_Parser)
    r = rsub.add_parser("ls", help="list sweeps and runs")
    r = rsub.add_parser("show", help="one run: config, metrics per epoch, artifacts")
    r.add_argument("run", help="run id or a unique prefix")
    r = rsub.add_parser("best", help="leaderboard of a sweep")
    r.add_argument("sweep")
    r.add_argument("--n", type=int, default=10)
    r = rsub.add_parser("compare", help="best run of each sweep side by side")
    r.add_argument("sweeps", nargs="+")
    r = rsub.add_parser("export", help="write a sweep's runs and metrics to CSV or Parquet")
    r.add_argument("sweep")
    r.add_argument("--format", choices=["csv", "parquet"], required=True)
    r.add_argument("--out", required=True)
    r = rsub.add_parser("compact", help="merge a sweep's part files atomically")
    r.add_argument("sweep")
    for action in rsub.choices.values():
        action.add_argument("--json", action="store_true", help="one JSON object on stdout")
        action.set_defaults(func=cmd_results)


def _add_eval_parser(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate prediction files")
    esub = p.add_subparsers(dest="eval_cmd", required=True, parser_class=_Parser)
    e = esub.add_parser("classification", help="AUC, accuracy, sensitivity, specificity")
    e.add_argument("--pred", required=True, help="CSV with columns label and score")
    e.add_argument("--group", help="column to aggregate by (mean score), e.g. patient_id")
    e.add_argument("--threshold", type=float, default=0.5)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)
    d = esub.add_parser(
        "detection", help="COCO mAP (pycocotools) and seed 000 lesion-level metrics"
    )
    d.add_argument("--gt", required=True, help="ground truth in COCO format")
    d.add_argument("--pred", required=True, help="detections in the COCO results format")
    d.add_argument("--iou", type=float, default=0.25, help="lesion-level match IoU")
    d.add_argument("--threshold", type=float, help="fix the score threshold (default: best F1)")
    d.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip invalid entries (reported with a count) instead of failing",
    )
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_eval_detection)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as err:
        from rich.markup import escape

        _console(stderr=True).print(f"[bold red]error:[/bold red] {escape(err.render())}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        _console(stderr=True).print("interrupted; resume a sweep with `medsweep sweep --resume`")
        return 130
    except Exception as err:  # a failure while running: short message, traceback with --debug
        if args.debug:
            raise
        from rich.markup import escape

        _console(stderr=True).print(
            f"[bold red]failed:[/bold red] {escape(f'{type(err).__name__}: {err}')} "
            "(rerun with --debug for the traceback)"
        )
        return EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
