"""The argparse parser of the `medsweep` command: its subcommands, their arguments and the
`cmd_*` function each one runs."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from orchestrator.cli_commands import (
    EXIT_BAD_INPUT,
    cmd_dashboard,
    cmd_data_synth,
    cmd_data_tool,
    cmd_demo,
    cmd_eval,
    cmd_eval_detection,
    cmd_evaluator,
    cmd_predict,
    cmd_report,
    cmd_results,
    cmd_results_table,
    cmd_run,
    cmd_sweep,
    cmd_tasks,
    cmd_validate,
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad arguments as exit 2 with one clear line (its default too)."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


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


def make_parser(description: str) -> argparse.ArgumentParser:
    """The parser; `orchestrator.cli.build_parser` gives it the first paragraph of its docstring."""
    parser = _Parser(prog="medsweep", description=description)
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
