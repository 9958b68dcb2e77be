"""Side-by-side measurements; `python -m benchmarks.run` (`make bench`) writes BENCHMARKS.md.

Each ``benchmarks/bench_*.py`` module exposes ``run(quick: bool = False, **params) ->
list[dict]``: ``quick`` shrinks it to seconds (the smoke test in tests/benchmarks runs it), and
keyword parameters (``--set NAME.KEY=VALUE``) size a reduced run. Optional module attributes:
``CORES = 1`` pins the benchmark to one core.

One row per figure (`benchmarks.common.row` builds them):

* ``name``, ``size`` (what was measured, how big), ``note`` (free text);
* ``value`` (the median), ``range`` ([min, max]), ``n`` (repeats), ``unit`` (default ``s``);
* ``target`` (same unit) and ``better`` (``lower``/``higher``): the issue's bar;
* ``reference_value`` (median), ``reference_range``, ``reference`` (what it is): the same
  quantity measured another way in the same run (plain PyTorch, plain Optuna, pycocotools ...);
* ``why``: when a target is missed, why, and what would close it.

Older rows with ``seconds``, ``target_s`` and ``reference_s`` are still accepted.
"""
