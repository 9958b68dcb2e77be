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
    task = get_task(config.experiment.task)(config.task)
    summary = None
    if args.check_data:
        from orchestrator.engine import check_data

        check_data(task, config.source)
        summary = {**task.data_summary(), **({"created": task.notes} if task.notes else {})}
    from orchestrator.privacy import redact_tree

    resolved = redact_tree(config.to_dict())  # a storage URL's password is never printed
    if args.json:
        _print_json(resolved)
        return EXIT_OK
    con = _console()
    sw = config.experiment.sweep
    search = (
        f"a grid of {len(sw.variants)} variants"
        if sw.variants
        else f"{len(sw.space)} searched fields, space size {space.size(sw.space):g}"
    )
    con.print(
        f"[green]OK[/green] {args.config}: task [bold]{config.experiment.task}[/bold], "
        f"metric {config.metric} ({config.mode}), {search}",
        soft_wrap=True,  # one greppable line, however long the path
    )
    if summary is not None:
        _print_summary(con, summary)
    if args.resolved:
        import yaml

        con.print(yaml.safe_dump(resolved, sort_keys=False), markup=False)
    return EXIT_OK


def _print_summary(con: Any, summary: dict[str, Any]) -> None:
    """`validate --check-data`: what the data is (counts per label, patients, sources)."""
    con.print("[bold]data[/bold]")
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = "; ".join(map(str, value))
        con.print(f"  {key}: {value}", markup=False)


def _execute(args: argparse.Namespace, command: str) -> int:
    from orchestrator import api
    from orchestrator.signals import Interrupted

    try:
        outcome = api.execute_config(
            _load(args),
            command=command,
            name=args.name,
            resume=getattr(args, "resume", False),
            quiet=args.quiet,
            verbose=args.verbose,
        )
    except Interrupted as stop:
        from rich.markup import escape

        _console(stderr=True).print(
            f"[yellow]{stop.command} {stop.sweep!r} interrupted by {stop.signal_name}[/yellow]; "
            f"{stop.trials} trial(s) stored as interrupted. Resume it with:\n"
            f"  {escape(_resume_command(args, stop.sweep))}"
        )
        return stop.exit_code
    api.print_summary(outcome, _console(), failures=False)  # the causes follow on stderr
    if outcome.errors:
        from rich.markup import escape

        err = _console(stderr=True)
        err.print(
            f"[red]{outcome.errors} of {outcome.trials} trial(s) failed[/red]; see "
            + escape(f"`medsweep results best {outcome.sweep} --store {outcome.path.parent}`")
        )
        for line in _failure_causes(outcome):
            err.print(line, markup=False)
        return EXIT_FAIL
    return EXIT_OK


def _resume_command(args: argparse.Namespace, sweep: str) -> str:
    """The command that continues an interrupted run or sweep, exactly as it was started."""
    import shlex

    overrides = [part for item in args.set for part in ("--set", item)]
    words = ["medsweep", args.command, args.config, *overrides, "--name", sweep, "--resume"]
    return shlex.join(words)


def _failure_causes(outcome: Any) -> list[str]:
    """One line per failed trial: its run id and the stored cause."""
    from orchestrator.privacy import redact
    from orchestrator.results import ResultsStore

    runs = ResultsStore(outcome.path.parent).runs(outcome.sweep)
    failed = runs[runs["status"] == "error"]
    return [
        f"  {r}: {redact(str(e)) or '(no cause stored)'}"
        for r, e in zip(failed["run_id"], failed["error"], strict=True)
    ]


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(args, "run")


def cmd_sweep(args: argparse.Namespace) -> int:
    return _execute(args, "sweep")


def cmd_results_table(args: argparse.Namespace) -> int:
    from orchestrator.results import ResultsStore
    from orchestrator.results import table as table_mod

    data = table_mod.table(ResultsStore(args.store), args.sweep)
    if args.plot:
        table_mod.scatter(data, Path(args.plot))
    if args.json:
        _print_json(data)
    elif args.csv:
        sys.stdout.write(table_mod.write_csv(data, None))
    else:
        table_mod.render_table(_console(), data)
        if args.plot:
            _console().print(f"scatter plot: {args.plot}")
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    from orchestrator.results import ResultsStore, views

    store = ResultsStore(args.store)
    action: Callable[..., Any] = {
        "ls": lambda: views.ls(store, args.sweep, folds=args.folds),
        "show": lambda: views.show(store, args.run),
        "best": lambda: views.best(
            store, args.sweep, n=args.n, metric=args.metric, sort=args.sort, filters=args.filter
        ),
        "compare": lambda: views.compare(store, args.sweeps, all_fields=args.all),
        "export": lambda: views.export(
            store, args.sweep, fmt=args.format, out=Path(args.out), folds=args.folds
        ),
        "compact": lambda: store.compact(views.resolve_sweep(store, args.sweep)),
        "prune": lambda: views.prune(
            store, args.sweep, keep=args.keep, dry_run=args.dry_run, force=args.force
        ),
        "sql": lambda: views.sql(store, args.table, args.sweep),
    }[args.results_cmd]
    data = action()
    if args.json:
        _print_json(data)
    else:
        views.render(args.results_cmd, data, _console())
    # a leaderboard with no trial on it (all failed, or none matches) is not a success
    return EXIT_FAIL if args.results_cmd == "best" and not data["rows"] else EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from orchestrator.report import build_report
    from orchestrator.results import ResultsStore

    result = build_report(ResultsStore(args.store), args.sweep, Path(args.out), args.plots)
    if args.json:
        _print_json(result)
    else:
        _console().print(
            f"wrote the report of {result['sweep']} ({result['trials']} trials, "
            f"{len(result['figures'])} figures, {result['bytes'] // 1024} KB) to {result['out']}"
            + (f"; PNG files in {args.plots}" if args.plots else "")
        )
    return EXIT_OK


def cmd_dashboard(args: argparse.Namespace) -> int:
    from orchestrator.dashboard import serve
    from orchestrator.results import ResultsStore

    console = _console(stderr=True)
    serve(ResultsStore(args.store), args.sweep, args.port, lambda text: console.print(text))
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from orchestrator.predict import predict

    result = predict(args.store, args.run, Path(args.data), Path(args.out), device=args.device)
    if args.json:
        _print_json(result)
    else:
        _console().print(
            f"wrote {result['cases']} predictions of {result['sweep']}/{result['run_id']} "
            f"({result['models']} model(s)) to {result['out']}"
        )
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
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give a folder (created if missing)", where="--out")
    try:
        path = cls.synthesize(out, n=args.n, size=args.size, seed=args.seed)
    except ValueError as err:  # generators check their arguments (n, size) with ValueError
        raise UserError(str(err), where=f"data synth {args.task}") from None
    _console().print(f"wrote {args.n} synthetic {args.task} images: {path}")
    return EXIT_OK


def cmd_data_tool(args: argparse.Namespace) -> int:
    from orchestrator.registry import run_data_tool

    return run_data_tool(args.data_cmd, list(args.tool_args))


def cmd_evaluator(args: argparse.Namespace) -> int:
    from orchestrator.registry import run_evaluator

    return run_evaluator(args.eval_cmd, list(args.tool_args))


def cmd_demo(args: argparse.Namespace) -> int:
    from orchestrator import api

    outcomes = api.demo(store=args.store, quiet=args.quiet, verbose=args.verbose, all=args.all)
    return EXIT_FAIL if any(o.errors for o in outcomes) else EXIT_OK


# --- parser --------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse turns the ValueError into exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


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
        p.add_argument("--resume", action="store_true", help=f"continue an interrupted {name}")
        p.set_defaults(func=func)

    _add_results_parser(sub)
    _add_report_parsers(sub)
    p = sub.add_parser(
        "predict",
        help="per-case predictions of a stored run (a CV trial: its fold ensemble) on new data",
    )
    p.add_argument(
        "run", metavar="RUN_OR_SWEEP", help="run id (or unique prefix), or a sweep (its best trial)"
    )
    p.add_argument("--data", required=True, help="a manifest in the task's input format")
    p.add_argument("--out", required=True, help="output file (CSV, or COCO JSON for detection)")
    p.add_argument("--store", default="medsweep_results", help="results store folder")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_predict)
    _add_eval_parser(sub)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_cmd", required=True, parser_class=_Parser)
    s = dsub.add_parser("synth", help="write a synthetic dataset for a task")
    s.add_argument("task")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=_positive_int, default=400, help="number of images")
    s.add_argument("--size", type=_positive_int, default=96, help="image side in pixels")
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
    p.add_argument(
        "--all", action="store_true", help="also the grid, plain fundus and PET/CT demo sweeps"
    )
    p.set_defaults(func=cmd_demo)
    return parser


def _add_results_parser(sub: Any) -> None:
    p = sub.add_parser("results", help="query the results store")
    p.add_argument("--store", default="medsweep_results", help="results store folder")
    rsub = p.add_subparsers(dest="results_cmd", required=True, parser_class=_Parser)
    r = rsub.add_parser("ls", help="list the sweeps, or the runs of one sweep")
    r.add_argument("sweep", nargs="?", help="list this sweep's runs (a unique prefix is enough)")
    r.add_argument("--folds", action="store_true", help="also the fold runs of CV trials")
    r = rsub.add_parser("show", help="one run: config, metrics per epoch, artifacts")
    r.add_argument("run", help="run id, a unique prefix of one, or SWEEP/RUN_ID")
    _add_best_parser(rsub)
    r = rsub.add_parser(
        "compare",
        help="runs side by side: metric, test metric and every resolved-config field that differs",
    )
    r.add_argument(
        "sweeps", nargs="+", metavar="SWEEP_OR_RUN", help="a sweep (its best run) or a run id"
    )
    r.add_argument("--all", action="store_true", help="every config field, not only differences")
    r = rsub.add_parser(
        "export",
        help="write a sweep's runs and metrics to CSV or Parquet",
        description="Writes OUT.FMT: one row per trial (add --folds for the fold runs of "
        "cross-validated trials) with its status, objective, times, resolved config as JSON, "
        "searched parameters as param.<key>, the metrics of its best epoch as best.<name> and of "
        "its last epoch as final.<name>; and OUT.metrics.FMT: every metric of every epoch in "
        "long format (run_id, epoch, split, name, value, wall_time). OUT without an extension "
        "gets .FMT.",
    )
    r.add_argument("sweep")
    r.add_argument("--format", choices=["csv", "parquet"], required=True)
    r.add_argument("--out", required=True, help="runs file; metrics go to <stem>.metrics.FMT")
    r.add_argument("--folds", action="store_true", help="also the fold runs of CV trials")
    r = rsub.add_parser("compact", help="merge a sweep's part files atomically")
    r.add_argument("sweep")
    r = rsub.add_parser(
        "prune",
        help="delete model weights and resume checkpoints to free disk; never touches rows",
    )
    r.add_argument("sweep")
    r.add_argument(
        "--keep",
        choices=["best", "none"],
        required=True,
        help="best: keep the best trial's weights (and its folds'); none: delete all weights",
    )
    r.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    r.add_argument("--force", action="store_true", help="also while trials are unfinished")
    r = rsub.add_parser(
        "sql",
        help="DuckDB SQL that reads the raw Parquet parts as one row per run (latest write)",
    )
    r.add_argument("sweep", nargs="?", help="one sweep (default: every sweep of the store)")
    r.add_argument("--table", choices=["runs", "metrics"], default="runs")
    for action in rsub.choices.values():
        action.add_argument("--json", action="store_true", help="one JSON object on stdout")
        action.set_defaults(func=cmd_results)
    r = rsub.add_parser(
        "table",
        help="one row per trial (and pseudo-label round): variant, CV metric and test metric, "
        "with their Pearson and Spearman correlation",
    )
    r.add_argument("sweep")
    r.add_argument("--plot", metavar="FILE.png", help="also write the CV-versus-test scatter")
    out = r.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object on stdout")
    out.add_argument("--csv", action="store_true", help="CSV on stdout")
    r.set_defaults(func=cmd_results_table)
    for action in rsub.choices.values():  # `results best SWEEP --store DIR` parses too
        action.add_argument(
            "--store",
            default=argparse.SUPPRESS,
            help="results store folder (default: medsweep_results)",
        )


def _add_report_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report of a sweep (opens offline)",
        description="Summary, leaderboard, the best trial's learning curves, ROC or confusion "
        "matrix (FROC for anomaly detection), the schedule timeline, Optuna's optimisation "
        "history, parameter importances and parallel coordinates, and the failed trials with "
        "their errors, in one HTML file with the figures embedded.",
    )
    p.add_argument("sweep", help="sweep name or a unique prefix of it")
    p.add_argument("--out", required=True, help="the HTML file to write, e.g. report.html")
    p.add_argument(
        "--plots", metavar="DIR", help="also write every figure (and each trial's curves) as PNG"
    )
    p.add_argument("--store", default="medsweep_results", help="results store folder")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser(
        "dashboard",
        help="optuna-dashboard on a sweep's study (127.0.0.1, a free port; prints the URL)",
    )
    p.add_argument("sweep", help="sweep name or a unique prefix of it")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    p.add_argument("--store", default="medsweep_results", help="results store folder")
    p.set_defaults(func=cmd_dashboard)


def _add_best_parser(rsub: Any) -> None:
    r = rsub.add_parser(
        "best",
        help="leaderboard of a sweep (exit 1 when no trial has a value)",
        description="Trials ranked by the objective (or --metric), best first; the cause of "
        "each failed trial below. Exit 1 when no trial is on the leaderboard.",
    )
    r.add_argument("sweep", help="sweep name or a unique prefix of it")
    r.add_argument("--n", type=_positive_int, default=10, help="how many trials (default 10)")
    r.add_argument(
        "--metric",
        help="rank by this stored metric (e.g. val_loss, test_auc): its best value over "
        "epochs, or the last value of a test_ metric (default: the objective)",
    )
    r.add_argument(
        "--sort",
        choices=["asc", "desc"],
        help="direction (default: the sweep's mode; for --metric min for losses, else max)",
    )
    r.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY OP VALUE",
        help="keep trials where it holds (repeatable, all must hold): OP one of = != < <= > >=, "
        "KEY a parameter (train.lr or lr), a metric (val_auc), status, variant, epochs, "
        "duration_s; = takes a,b for any of several, e.g. status=completed,pruned",
    )


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
    from orchestrator.registry import evaluators

    for name, target in sorted(evaluators().items()):
        t = esub.add_parser(
            name, help=f"{name} evaluator ({target.split(':')[0]}); see its --help", add_help=False
        )
        t.add_argument("tool_args", nargs=argparse.REMAINDER)
        t.set_defaults(func=cmd_evaluator)


def _family_command(argv: list[str]) -> tuple[str, str, list[str]] | None:
    """`data TOOL ...` / `eval EVALUATOR ...` of a task family: the tool parses its own
    arguments (argparse's REMAINDER would swallow or reject its leading options)."""
    from orchestrator.registry import data_tools, evaluators

    rest = [a for a in argv if a != "--debug"]
    if len(rest) >= 2 and rest[0] == "data" and rest[1] in data_tools():
        return "data", rest[1], rest[2:]
    if len(rest) >= 2 and rest[0] == "eval" and rest[1] in evaluators():
        return "eval", rest[1], rest[2:]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    family = _family_command(argv)
    if family is not None:
        group, name, rest = family
        ns = argparse.Namespace(
            debug="--debug" in argv,
            data_cmd=name,
            eval_cmd=name,
            tool_args=rest,
            func=cmd_data_tool if group == "data" else cmd_evaluator,
        )
        return _run(ns)
    return _run(build_parser().parse_args(argv))


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except UserError as err:
        from rich.markup import escape

        from orchestrator.privacy import redact

        message = escape(redact(err.render()))  # a URL's password is never printed
        _console(stderr=True).print(f"[bold red]error:[/bold red] {message}")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        hint = "`medsweep results ls` shows what was stored"
        if getattr(args, "func", None) in (cmd_run, cmd_sweep) and args.name:
            hint = f"resume a started {args.command} with: {_resume_command(args, args.name)}"
        _console(stderr=True).print(f"interrupted; {hint}", markup=False)
        return 130
    except Exception as err:  # a failure while running: short message, traceback with --debug
        if args.debug:
            raise
        from rich.markup import escape

        from orchestrator.privacy import redact

        _console(stderr=True).print(
            f"[bold red]failed:[/bold red] {escape(redact(f'{type(err).__name__}: {err}'))} "
            "(rerun with --debug for the traceback)"
        )
        return EXIT_FAIL


if __name__ == "__main__":
    raise SystemExit(main())
