"""The sweep report as one self-contained HTML file: inline CSS, figures embedded as base64 PNG,
no scripts, fonts or links to fetch, so it opens offline and can be mailed or archived.

Every number the report shows sits in an element with a `data-value` attribute holding the
stored value at full precision, so tests (and scripts) can check the page against the store.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.report.collect import ReportData
from orchestrator.results.store import utc_iso
from orchestrator.results.views_common import short_headers

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;
background:#f5f6f8}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:28px 0 10px;border-bottom:2px solid
#d8dce3;padding-bottom:4px}
.sub{color:#5b6475;margin:0 0 16px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:16px 20px;
margin-bottom:18px}
table{border-collapse:collapse;font-size:.86em;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #eceef2;text-align:left;vertical-align:top}
th{background:#f0f2f5;position:sticky;top:0}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#fff7d6}
.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:8px 18px}
.kv div{font-size:.9em;overflow-wrap:anywhere}
.kv b{display:block;color:#5b6475;font-weight:600;font-size:.8em}
.figs{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;background:#fff;border:1px solid #eceef2;border-radius:6px;padding:6px}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.8em;color:#5b6475;padding-top:4px}
.status-completed{color:#1a7f37}.status-error,.status-diverged{color:#c62828}
.status-pruned,.status-interrupted,.status-stopped{color:#a36b00}.status-running{color:#0b6bcb}
pre{white-space:pre-wrap;font-size:.8em;background:#f7f7f9;padding:8px;border-radius:4px;
max-height:320px;overflow:auto}
.note{color:#5b6475;font-size:.85em}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def number(value: Any, spec: str = ".4f", col: str = "") -> str:
    """A numeric cell: the formatted text, and the stored value in `data-value`."""
    attr = f' data-col="{esc(col)}"' if col else ""
    if value is None or (isinstance(value, float) and value != value):
        return f'<td class="num"{attr} data-value="">—</td>'
    shown = format(value, spec) if isinstance(value, float) else str(value)
    return f'<td class="num"{attr} data-value="{esc(repr(value))}">{esc(shown)}</td>'


def cell(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number(value, ".4g")
    text = value if isinstance(value, str) else json.dumps(value)
    return f"<td>{esc(text)}</td>"


def table(headers: Sequence[str], rows: Iterable[str], ident: str = "", numeric: int = 0) -> str:
    """`rows` are ready `<tr>` strings; the last `numeric` headers are right-aligned."""
    heads = "".join(
        f'<th class="num">{esc(h)}</th>' if i >= len(headers) - numeric else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    attr = f' id="{ident}"' if ident else ""
    return f"<table{attr}><thead><tr>{heads}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def figure(ident: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{ident}"><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def key_values(values: Mapping[str, Any], ident: str = "") -> str:
    attr = f' id="{ident}"' if ident else ""
    items = []
    for key, value in values.items():
        if value in (None, "", {}, []):
            continue
        raw = value if isinstance(value, (int, float, str)) else json.dumps(value)
        shown = format(value, ".4g") if isinstance(value, float) else raw
        items.append(
            f'<div data-key="{esc(key)}" data-value="{esc(raw)}"><b>{esc(key)}</b>'
            f"{esc(shown)}</div>"
        )
    return f'<div class="kv"{attr}>{"".join(items)}</div>'


# ----- sections -----------------------------------------------------------------------------


def summary_section(data: ReportData) -> str:
    s = data.summary
    facts = {
        "task": s["task"],
        "metric": f"{s['metric']} ({s['mode']}, {s['objective']} epoch)",
        "trials": s["trials"],
        "completed": s["completed"],
        "pruned": s["pruned"],
        "failed": s["failed"],
        "running": s["running"],
        "interrupted": s["interrupted"],
        "best trial": s["best_run"],
        f"best {s['metric']}": s["best_value"],
        f"its {s['test_metric']}": s["best_test"],
        "wall time (s)": s["wall_s"],
        "trial time, summed (s)": s["trial_s"],
        "folds": s["folds"],
        "pseudo-label rounds": s["rounds"],
        "created": s["created"],
        "host": s["host"],
        "git": s["git_rev"],
        "versions": ", ".join(f"{k} {v}" for k, v in s["versions"].items()),
    }
    space = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(json.dumps(v, sort_keys=True))}</td></tr>"
        for k, v in s["space"].items()
    )
    searched = f"<h3>search space</h3>{table(['field', 'distribution'], [space])}" if space else ""
    return f'<section id="summary"><h2>Summary</h2>{key_values(facts, "facts")}{searched}</section>'


def board_html(board: Mapping[str, Any], test_metric: str = "") -> str:
    """The leaderboard (data of `views.best`) as an HTML table: the report's, and what the
    Python API's results show in Jupyter."""
    params = board["params"]
    tests = any(r.get("test") is not None for r in board["rows"])
    headers = ["trial", *short_headers(params), board["metric"] or "objective"]
    headers += [test_metric or "test"] if tests else []
    headers += ["epochs", "best epoch", "time (s)", "status"]
    rows = []
    for i, r in enumerate(board["rows"]):
        cells = [f'<td class="run">{esc(r["run_id"])}</td>']
        cells += [cell(r["params"].get(p)) for p in params]
        cells.append(number(r["objective"], col="objective"))
        if tests:
            cells.append(number(r["test"], col="test"))
        cells += [number(r["epochs"]), number(r["best_epoch"]), number(r["duration_s"], ".1f")]
        cells.append(f'<td class="status-{esc(r["status"])}">{esc(r["status"])}</td>')
        best = ' class="best"' if i == 0 else ""
        rows.append(f'<tr{best} data-run="{esc(r["run_id"])}">{"".join(cells)}</tr>')
    if not rows:
        return '<p class="note">No trial has an objective.</p>'
    return table(headers, rows, "leaderboard-table")


def leaderboard_section(data: ReportData) -> str:
    board = data.board
    more = board["matched"] - len(board["rows"])
    note = f'<p class="note">{more} more: medsweep results best {esc(data.sweep)} --n N</p>'
    direction = "higher is better" if board["mode"] == "max" else "lower is better"
    return (
        f'<section id="leaderboard"><h2>Leaderboard</h2><p class="note">'
        f"{esc(board['metric'])}, {direction}; {board['matched']} of {board['trials']} trial(s) "
        f"with a value</p>{board_html(board, data.summary['test_metric'])}"
        f"{note if more > 0 else ''}</section>"
    )


def best_section(data: ReportData, figures: Mapping[str, tuple[bytes, str]]) -> str:
    best = data.best
    if best is None:
        return '<section id="best-trial"><h2>Best trial</h2><p>No trial finished.</p></section>'
    names = sorted(set(best["best"]) | set(best["final"]))
    rows = [
        f"<tr><td>{esc(n)}</td>{number(best['best'].get(n))}{number(best['final'].get(n))}</tr>"
        for n in names
    ]
    facts = {
        "trial": best["run_id"],
        "variant": best["variant"],
        **{f"param {k}": v for k, v in best["params"].items()},
        "best epoch": best["best_epoch"],
        "epochs": best["epochs"],
        "time (s)": best["duration_s"],
        "weights": best["weights"],
        "artifacts": best["artifacts"],
    }
    at = f"best epoch ({best['best_epoch']})" if best["best_epoch"] is not None else "best"
    metrics = table(["metric", at, "last epoch"], rows, "best-metrics", numeric=2)
    figs = _figures(figures, ("curves", "schedule", "roc", "confusion", "froc"))
    return (
        f'<section id="best-trial"><h2>Best trial {esc(best["run_id"])}</h2>'
        f"{key_values(facts, 'best-facts')}<h3>metrics</h3>{metrics}{figs}</section>"
    )


def sweep_section(figures: Mapping[str, tuple[bytes, str]], note: str) -> str:
    figs = _figures(figures, ("overlay", "history", "importances", "parallel"))
    extra = f'<p class="note">{esc(note)}</p>' if note else ""
    return f'<section id="sweep-plots"><h2>Sweep</h2>{figs}{extra}</section>'


def _figures(figures: Mapping[str, tuple[bytes, str]], keys: Sequence[str]) -> str:
    parts = [figure(f"fig-{k}", *figures[k]) for k in keys if k in figures]
    return f'<div class="figs">{"".join(parts)}</div>' if parts else ""


def failures_section(data: ReportData) -> str:
    if not data.failures:
        return '<section id="failed"><h2>Failed trials</h2><p class="note">None.</p></section>'
    rows = []
    for f in data.failures:
        trace = f"<details><summary>traceback</summary><pre>{esc(f['traceback'])}</pre></details>"
        rows.append(
            f'<tr data-run="{esc(f["run_id"])}"><td>{esc(f["run_id"])}</td>'
            f'<td class="status-{esc(f["status"])}">{esc(f["status"])}</td>'
            f"<td>{esc(json.dumps(f['params'], sort_keys=True))}</td>"
            f'<td class="error">{esc(f["error"])}{trace if f["traceback"] else ""}</td></tr>'
        )
    body = table(["trial", "status", "params", "cause"], rows, "failed-table")
    return f'<section id="failed"><h2>Failed trials ({len(rows)})</h2>{body}</section>'


def page(data: ReportData, figures: Mapping[str, tuple[bytes, str]], generated: float) -> str:
    s = data.summary
    title = f"medsweep report: {data.sweep}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>"
        f'<h1 id="title">Sweep {esc(data.sweep)}</h1>'
        f'<p class="sub">task {esc(s["task"])} · {esc(s["metric"])} ({esc(s["mode"])}) · '
        f"generated {esc(utc_iso(generated))} by medsweep</p>"
        f"{summary_section(data)}{leaderboard_section(data)}{best_section(data, figures)}"
        f"{sweep_section(figures, data.study_note)}{failures_section(data)}"
        f'<p class="note">medsweep results best {esc(data.sweep)} · medsweep results show '
        f"RUN_ID · medsweep dashboard {esc(data.sweep)}</p></main></body></html>\n"
    )
