"""Side-by-side measurements; `python -m benchmarks.run` (or `make bench`) rewrites BENCHMARKS.md.

Each ``benchmarks/bench_*.py`` module exposes ``run() -> list[dict]`` with one row per
measurement: ``name``, ``size``, ``seconds``, ``target_s`` (None when there is no target), ``note``.
"""
