"""The `medsweep` subcommands (`cmd_*`, each takes the parsed arguments and returns the exit
code), their console and JSON output helpers, and the exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import UserError

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    if stderr:  # messages are never hard-wrapped: they stay one greppable paragraph
        return Console(stderr=True, highlight=False, soft_wrap=True)
    # Logs and CI have no terminal width; 140 columns keeps leaderboards on one line per row.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str, allow_nan=True) + "\n")


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
