"""The `medsweep` command. A thin layer over the Python API; heavy imports stay inside commands
so that `medsweep --help` answers quickly.

The subcommands live in `orchestrator.cli_commands`, the parser in `orchestrator.cli_parser`.

Exit codes: 0 success, 2 bad input (config, data, arguments), 1 a failure while running.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from orchestrator.cli_commands import (
    EXIT_BAD_INPUT,
    EXIT_FAIL,
    _console,
    _resume_command,
    cmd_data_tool,
    cmd_evaluator,
    cmd_run,
    cmd_sweep,
)
from orchestrator.cli_parser import make_parser
from orchestrator.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    """The `medsweep` parser, described by this module's first paragraph."""
    return make_parser(__doc__.split("\n\n")[0])


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
