"""Reports: `report.json` (every prediction and score) and a self-contained `report.html` (no external files:
charts are matplotlib PNGs embedded as base64), plus the comparison of two runs and the regression gate.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ember.evals.harness import RunResult
from ember.model.errors import EmberError

LOWER_IS_BETTER = {"perplexity"}
WORST = 10


class ReportError(EmberError):
    """A run folder or report file that cannot be read."""

    exit_code = 2


def _atomic_write(path: Path, data: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


def to_dict(run: RunResult) -> dict[str, Any]:
    return {
        "suite": run.suite, "target": run.target, "seed": run.seed, "limit": run.limit,
        "started": run.started, "finished": run.finished,
        "summary": {t.name: {"kind": t.kind, "examples": t.examples, "seconds_per_example": t.seconds_per_example,
                             "metrics": t.metrics} for t in run.tasks},
        "examples": {t.name: t.records for t in run.tasks},
    }


def load(path: Path) -> dict[str, Any]:
    """A report.json, or a run folder holding one."""
    file = path / "report.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"no report at {file}", hint="Run `ember eval run SUITE` first.") from None
    except json.JSONDecodeError as e:
        raise ReportError(f"{file}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict) or "summary" not in data:
        raise ReportError(f"{file}: not an Ember eval report (no 'summary')")
    return data


def write(run: RunResult) -> tuple[Path, Path]:
    data = to_dict(run)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = run.run_dir / "report.json", run.run_dir / "report.html"
    _atomic_write(json_path, json.dumps(data, ensure_ascii=False, indent=1))
    _atomic_write(html_path, render_html(data))
    return json_path, html_path


# ---- HTML --------------------------------------------------------------------------------------------
CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}.up{color:#080}.down{color:#b00}
details{margin:.4em 0}pre{white-space:pre-wrap;margin:0;font:12px/1.4 ui-monospace,monospace}
.ex{border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.6em 0}
.psg{background:#fafafa;border-left:3px solid #ccc;padding:.3em .6em;margin:.3em 0}.gold{border-left-color:#2a2}
img{max-width:100%}"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) and math.isfinite(v) else _e(v)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _bars(title: str, labels: list[str], series: dict[str, list[float]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(labels) * len(series)), 2.8))
    width = 0.8 / max(len(series), 1)
    for n, (name, values) in enumerate(series.items()):
        xs = [i + n * width for i in range(len(labels))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))], labels)
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def _histogram(title: str, values: list[float]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.0, 2.8))
    ax.hist(values, bins=10, range=(0.0, 1.0), color="#4c72b0", edgecolor="white")
    ax.set_title(title)
    ax.set_xlabel("per-example score")
    ax.set_ylabel("examples")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _primary(summary: dict[str, Any], records: list[dict[str, Any]]) -> str | None:
    names = [m for m in summary["metrics"] if records and m in records[0]["scores"]]
    return names[0] if names else None


def _shown(r: dict[str, Any]) -> Any:
    return r["prediction"].get("text") or r["prediction"].get("choice_logprobs")


def _example_html(r: dict[str, Any]) -> str:
    p = r["prediction"]
    scores = ", ".join(f"{k} {v:.3f}" for k, v in r["scores"].items() if v is not None)
    parts = [f"<div class=ex><b>{_e(r['id'])}</b> <small>{_e(scores)}</small>",
             f"<div><b>Input:</b><pre>{_e(r['input'][:1500])}</pre></div>"]
    if r.get("choices"):
        opts = "".join(f"<li>{'✔ ' if i == r.get('gold') else ''}{_e(c)}</li>" for i, c in enumerate(r["choices"]))
        parts.append(f"<ol type=A>{opts}</ol>")
    if p.get("text"):
        parts.append(f"<div><b>Prediction:</b><pre>{_e(p['text'])}</pre></div>")
    if p.get("choice_logprobs"):
        parts.append(f"<div><b>Log-likelihoods:</b> {_e(', '.join(f'{x:.2f}' for x in p['choice_logprobs']))}</div>")
    if r.get("references"):
        parts.append(f"<div><b>References:</b><pre>{_e(' | '.join(r['references'][:5]))}</pre></div>")
    if p.get("retrieved"):
        parts.append("<details><summary>Retrieved passages</summary>")
        for n, psg in enumerate(p["retrieved"][:5], 1):
            gold = " gold" if psg["id"] in r.get("qrels", {}) else ""
            parts.append(f"<div class='psg{gold}'><small>{n}. {_e(psg['id'])} ({psg['score']:.3f})</small>"
                         f"<pre>{_e(psg['text'][:600])}</pre></div>")
        parts.append("</details>")
    elif r.get("context"):
        parts.append(f"<details><summary>Context</summary><pre>{_e(r['context'][:2000])}</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def render_html(data: dict[str, Any]) -> str:
    title = f"Ember eval: {data['suite']}"
    out = [f"<!doctype html><html><head><meta charset=utf-8><title>{_e(title)}</title><style>{CSS}</style></head>",
           f"<body><h1>{_e(title)}</h1><p>Target: <code>{_e(json.dumps(data['target']))}</code><br>",
           f"Seed {data['seed']}, limit {data['limit']}, finished "
           f"{_e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(data['finished'])))}</p>",
           "<h2>Summary</h2><table><tr><th>task</th><th>examples</th><th>metric</th><th>value</th>"
           "<th>s / example</th></tr>"]
    for name, s in data["summary"].items():
        for n, (m, v) in enumerate(s["metrics"].items()):
            lead = (f"<td rowspan={len(s['metrics'])}>{_e(name)}</td><td class=n rowspan={len(s['metrics'])}>"
                    f"{s['examples']}</td>") if n == 0 else ""
            tail = f"<td class=n rowspan={len(s['metrics'])}>{s['seconds_per_example']:.3f}</td>" if n == 0 else ""
            out.append(f"<tr>{lead}<td>{_e(m)}</td><td class=n>{_fmt(v)}</td>{tail}</tr>")
    out.append("</table>")
    for name, s in data["summary"].items():
        records = data["examples"].get(name, [])
        out.append(f"<h2>{_e(name)}</h2>")
        shown = {m: v for m, v in s["metrics"].items() if m not in LOWER_IS_BETTER}
        if shown:
            out.append(_bars(name, list(shown), {"score": list(shown.values())}))
        primary = _primary(s, records)
        if primary:
            values = [r["scores"][primary] for r in records if r["scores"].get(primary) is not None]
            if values:
                out.append(_histogram(f"{name}: {primary} per example", values))
            order = [m for m in s["metrics"] if m in records[0]["scores"]]  # ties on the first broken by the next
            worst = sorted(records, key=lambda r: [r["scores"].get(m) is None for m in order[:1]]
                           + [r["scores"].get(m) or 0.0 for m in order])
            out.append(f"<h3>Worst {min(WORST, len(worst))} by {_e(primary)}</h3>")
            out += [_example_html(r) for r in worst[:WORST]]
    out.append("</body></html>")
    return "\n".join(out)


# ---- compare and gate --------------------------------------------------------------------------------
def metric_rows(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, float | None, float | None]]:
    rows = []
    for task in dict.fromkeys([*a["summary"], *b["summary"]]):
        ma = a["summary"].get(task, {}).get("metrics", {})
        mb = b["summary"].get(task, {}).get("metrics", {})
        for m in dict.fromkeys([*ma, *mb]):
            rows.append((task, m, ma.get(m), mb.get(m)))
    return rows


def compare_html(a: dict[str, Any], b: dict[str, Any], label_a: str, label_b: str) -> str:
    out = [f"<!doctype html><html><head><meta charset=utf-8><title>Compare {_e(label_a)} vs {_e(label_b)}</title>"
           f"<style>{CSS}</style></head><body><h1>{_e(label_a)} vs {_e(label_b)}</h1>",
           f"<p>A: <code>{_e(json.dumps(a['target']))}</code><br>B: <code>{_e(json.dumps(b['target']))}</code></p>",
           "<table><tr><th>task</th><th>metric</th><th>A</th><th>B</th><th>B − A</th></tr>"]
    for task, m, va, vb in metric_rows(a, b):
        delta = vb - va if va is not None and vb is not None else None
        better = delta is not None and (delta < 0 if m in LOWER_IS_BETTER else delta > 0)
        cls = "" if not delta else ("up" if better else "down")
        out.append(f"<tr><td>{_e(task)}</td><td>{_e(m)}</td><td class=n>{_fmt(va)}</td><td class=n>{_fmt(vb)}</td>"
                   f"<td class='n {cls}'>{_fmt(delta) if delta is not None else '–'}</td></tr>")
    out.append("</table>")
    for task in a["summary"]:
        if task not in b["summary"]:
            continue
        sa, sb = a["summary"][task], b["summary"][task]
        common = [m for m in sa["metrics"] if m in sb["metrics"] and m not in LOWER_IS_BETTER]
        if common:
            out.append(_bars(task, common, {label_a: [sa["metrics"][m] for m in common],
                                            label_b: [sb["metrics"][m] for m in common]}))
        ra = {r["id"]: r for r in a["examples"].get(task, [])}
        rb = {r["id"]: r for r in b["examples"].get(task, [])}
        primary = _primary(sa, list(ra.values()))
        if not primary:
            continue
        score = lambda r, m=primary: r["scores"].get(m)
        diff = [(ra[i], rb[i]) for i in ra if i in rb and score(ra[i]) != score(rb[i])]
        diff.sort(key=lambda t: (score(t[1]) or 0) - (score(t[0]) or 0))
        out.append(f"<h2>{_e(task)}: {len(diff)} examples changed {_e(primary)} (worst regressions first)</h2>")
        out.append("<table><tr><th>example</th><th>A</th><th>B</th></tr>")
        for x, y in diff[:50]:
            cell = lambda r, m=primary: (f"<b>{_e(m)} {_fmt(r['scores'].get(m))}</b><pre>{_e(_shown(r))}</pre>")
            out.append(f"<tr><td><pre>{_e(x['input'][:300])}</pre><small>{_e(' | '.join(x['references'][:3]))}</small>"
                       f"</td><td>{cell(x)}</td><td>{cell(y)}</td></tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def regressions(run: dict[str, Any], baseline: dict[str, Any], margin: float) -> list[str]:
    """Every baseline metric that the run lost by more than `margin` points (or lacks)."""
    problems = []
    for task, m, base, now in metric_rows(baseline, run):
        if base is None:
            continue  # new in the run: nothing to regress from
        if now is None:
            problems.append(f"{task} {m}: missing from the run (baseline {base:.2f})")
            continue
        drop = now - base if m in LOWER_IS_BETTER else base - now
        if drop > margin:
            problems.append(f"{task} {m}: {now:.2f} vs baseline {base:.2f} (worse by {drop:.2f} > margin {margin})")
    return problems
