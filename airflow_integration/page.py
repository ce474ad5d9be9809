"""The "Model health" page as HTML with server-side SVG charts: nothing is loaded from the internet.

Pure functions of the data `airflow_integration.health.page()` returns, so they test without a server.
"""

from __future__ import annotations

import html
import json
from typing import Any

from airflow_integration.words import number, gate_words, retrain_words, segment_words

E = html.escape


# -- charts -------------------------------------------------------------------------------

def performance_svg(perf: dict[str, Any], timeline: list[dict[str, Any]], width: int = 960, height: int = 300,
                    chart_id: str = "perf-chart", fmt: str = ".4f", tick: str = ".3f") -> str:
    """Realized metric per prediction day (filled: matured, hollow: provisional), its label coverage
    as a band at the foot, the estimate as a dashed line, and each champion change as a rule."""
    days = perf["days"]
    metric = perf.get("metric") or "metric"
    if not days:
        return '<p class="empty">No performance recorded yet.</p>'
    left, right, top, bottom = 50, 20, 16, 64
    w, h = width - left - right, height - top - bottom
    vals = [v for d in days for v in (d["realized"], d["estimated"]) if v is not None]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    pad = (hi - lo) * 0.1 or 0.05
    lo, hi = lo - pad, hi + pad
    n = len(days)
    x = {d["ds"]: left + (i + 0.5) * w / n for i, d in enumerate(days)}

    def y(v: float) -> float:
        return top + h - (v - lo) / (hi - lo) * h

    out = [(f'<svg id="{chart_id}" class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="{E(metric)} over time">')]
    for i in range(5):  # y grid
        v = lo + (hi - lo) * i / 4
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
                   f'<text x="{left - 4}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{v:{tick}}</text>')
    band_top, band_h = top + h + 8, 24  # coverage band: 0..100% of rows labelled
    out.append(f'<text x="{left - 4}" y="{band_top + 16}" class="tick" text-anchor="end">cov</text>')
    bw = max(w / n - 1, 1)
    for d in days:
        c = d["coverage"] or 0.0
        out.append(f'<rect class="cov" x="{x[d["ds"]] - bw / 2:.1f}" y="{band_top + band_h * (1 - c):.1f}" width="{bw:.1f}" '
                   f'height="{band_h * c:.1f}"><title>{d["ds"]}: {c:.0%} labelled ({d["labelled"]} of {d["rows"]})</title></rect>')
    for e in timeline:  # a move decided on D takes effect from the night after D
        if days[0]["ds"] <= e["ds"] < days[-1]["ds"]:
            xe = next(x[d["ds"]] for d in days if d["ds"] > e["ds"]) - w / n / 2
            out.append(f'<line x1="{xe:.1f}" x2="{xe:.1f}" y1="{top}" y2="{top + h}" class="promo"/>'
                       f'<text x="{xe + 3:.1f}" y="{top + 10}" class="tick">v{E(str(e["version"]))}</text>')
    est = [(x[d["ds"]], y(d["estimated"])) for d in days if d["estimated"] is not None]
    if est:
        out.append('<polyline class="est" points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b in est) + '"/>')
    real = [(x[d["ds"]], y(d["realized"])) for d in days if d["realized"] is not None]
    if real:
        out.append('<polyline class="real" points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b in real) + '"/>')
    for d in days:
        if d["realized"] is None:
            continue
        cls = "matured" if d["matured"] else "provisional"
        out.append(f'<circle class="{cls}" cx="{x[d["ds"]]:.1f}" cy="{y(d["realized"]):.1f}" r="3">'
                   f'<title>{d["ds"]} v{E(str(d["model_version"]))}: realized {E(metric)} {d["realized"]:{fmt}} '
                   f'({"matured" if d["matured"] else "provisional"}, {(d["coverage"] or 0):.0%} labelled as of {d["as_of"]}); '
                   f'estimated {number(d["estimated"], fmt)}</title></circle>')
    step = max(1, n // 8)
    for i, d in enumerate(days):
        if i % step == 0:
            out.append(f'<text x="{x[d["ds"]]:.1f}" y="{height - 4}" class="tick" text-anchor="middle">{d["ds"]}</text>')
    out.append("</svg>")
    legend = ('<div class="legend"><span class="k real"></span>realized (● matured, ○ provisional) '
              '<span class="k est"></span>estimated (before labels) <span class="k cov"></span>label coverage '
              '<span class="k promo"></span>champion change</div>')
    return "".join(out) + legend


def value_svg(perf: dict[str, Any], timeline: list[dict[str, Any]], currency: str = "") -> str:
    """Business value per row of each prediction day, realized (labels known) and estimated before labels,
    drawn as the metric is; nothing without a cost matrix."""
    if not perf.get("value"):
        return ""
    unit = f"value per row ({currency})" if currency else "value per row"
    days = [{**d, "realized": d["realized_value"], "estimated": d["estimated_value"]} for d in perf["days"]]
    return performance_svg({"metric": unit, "days": days}, timeline, chart_id="value-chart", fmt=".4g", tick=".3g")


def _episodes_table(value: dict[str, Any]) -> str:
    """Each drift episode and the value it lost before it was answered (see `health.value_episodes`)."""
    rows = value.get("episodes") or []
    if not rows:
        return '<p class="empty">No drift episode yet.</p>'
    unit = f" ({E(value['currency'])})" if value.get("currency") else ""
    out = [(f"<table id=\"episodes\"><tr><th>drift episode</th><th>counted through</th><th>status</th><th>champion</th>"
            f"<th class=\"num\">value lost{unit}</th><th class=\"num\">reference per row</th>"
            f"<th class=\"num\">forgone before the answer{unit}</th><th>days</th></tr>")]
    for r in reversed(rows):
        status = {"answered": f"answered by v{E(str(r['answered_by']))}", "ended": "ended without a promotion",
                  "open": "still on"}[r["status"]]
        unknown = f", {r['unknown_days']} without a value" if r["unknown_days"] else ""
        out.append(f"<tr><td>{r['start']}</td><td>{r['through']}</td><td>{status}</td>"
                   f"<td>{'v' + E(str(r['champion'])) if r['champion'] else '–'}</td>"
                   f"<td class=\"num\">{number(r['lost'], ',.2f')}</td>"
                   f"<td class=\"num\" title=\"from {E(r['reference_from'])}\">{number(r['reference'], '.4g')}</td>"
                   f"<td class=\"num\">{_forgone(r)}</td>"
                   f"<td>{r['days']} days, {r['rows']:,} rows{unknown}</td></tr>")
    return "".join(out) + "</table>"


def _forgone(r: dict[str, Any]) -> str:
    if r.get("forgone") is None:
        return "–"
    return (f"{number(r['forgone'], ',.2f')} <span class=\"tick\">({number(r['forgone_low'], ',.0f')}…"
            f"{number(r['forgone_high'], ',.0f')})</span>")


def _heat(ratio: float) -> str:
    """Effect size over its floor -> a colour: pale below the floor, deepening red above it."""
    t = max(0.0, min(ratio / 2.0, 1.0))
    r, g, b = 255, int(245 - 200 * t), int(235 - 215 * t)
    return f"#{r:02x}{g:02x}{b:02x}"


def _psi_words(cell: dict[str, Any]) -> str:
    """A cell's PSI, reported beside its test (never part of the verdict)."""
    return "" if cell.get("psi") is None else f"; PSI {cell['psi']:.3f} ({cell.get('band')}, reported only)"


def drift_svg(drift: dict[str, Any], width: int = 960) -> str:
    """Features x nights coloured by effect size over its floor; a dot where significant after FDR,
    a dark border where drifted; the model's score drift as a line underneath, alarms marked."""
    nights, features = drift["nights"], drift["features"]
    if not nights:
        return '<p class="empty">No drift checks recorded yet.</p>'
    left, top, cell_h, line_h = 150, 8, 14, 70
    n = len(nights)
    cw = max((width - left - 10) / n, 1.0)
    height = top + cell_h * len(features) + 2 * line_h + 50
    out = [(f'<svg id="drift-heatmap" class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="drift per feature and night">')]
    for j, f in enumerate(features):
        yy = top + j * cell_h
        out.append(f'<text x="{left - 4}" y="{yy + cell_h - 3}" class="tick" text-anchor="end">{E(f)}</text>')
        for i, c in enumerate(drift["cells"][f]):
            if c is None:
                continue
            ratio = (c["effect"] or 0) / c["floor"] if c["floor"] else (c["effect"] or 0) * 10
            cls = "cell drifted" if c["drifted"] else "cell"
            xx = left + i * cw
            out.append(f'<rect class="{cls}" data-ds="{nights[i]}" data-feature="{E(f)}" x="{xx:.1f}" y="{yy}" '
                       f'width="{max(cw - 0.5, 0.5):.1f}" height="{cell_h - 1}" fill="{_heat(ratio)}">'
                       f'<title>{nights[i]} {E(f)}: {c["metric"]} {c["effect"]:.3f} (floor {c["floor"]})'
                       f'{"" if c["p"] is None else ", p=" + format(c["p"], ".2g")}'
                       f'{", significant after FDR" if c["significant"] else ""}{", DRIFTED" if c["drifted"] else ""}'
                       f'{_psi_words(c)}</title></rect>')
            if c["significant"] and cw >= 3:
                out.append(f'<circle class="sig" cx="{xx + cw / 2:.1f}" cy="{yy + cell_h / 2 - 0.5:.1f}" r="{min(cw, cell_h) / 5:.1f}"/>')
    base = top + cell_h * len(features) + 10
    scores = [(i, c) for i, c in enumerate(drift["score"]) if c is not None]
    hi = max([c["effect"] for _, c in scores] + [c["floor"] for _, c in scores] + [0.05])
    out.append(f'<text x="{left - 4}" y="{base + line_h / 2}" class="tick" text-anchor="end">prediction drift</text>')
    if scores:
        floor = scores[-1][1]["floor"]
        fy = base + line_h - floor / hi * line_h
        out.append(f'<line class="floor" x1="{left}" x2="{left + n * cw:.1f}" y1="{fy:.1f}" y2="{fy:.1f}"/>')
        pts = " ".join(f"{left + (i + 0.5) * cw:.1f},{base + line_h - c['effect'] / hi * line_h:.1f}" for i, c in scores)
        out.append(f'<polyline id="score-drift" class="real" points="{pts}"/>')
    # the alarm's evidence across nights: the CUSUM against its decision interval h
    cb = base + line_h + 10
    sums = [(i, v) for i, v in enumerate(drift.get("cusum") or []) if v is not None]
    h = drift.get("cusum_h")
    out.append(f'<text x="{left - 4}" y="{cb + line_h / 2}" class="tick" text-anchor="end">alarm CUSUM</text>')
    if sums and h:
        top_c = max([v for _, v in sums] + [1.5 * h])
        hy = cb + line_h - h / top_c * line_h
        out.append(f'<line class="floor" x1="{left}" x2="{left + n * cw:.1f}" y1="{hy:.1f}" y2="{hy:.1f}">'
                   f'<title>h = {h:.2f}: an alarm starts when the CUSUM reaches it</title></line>')
        pts = " ".join(f"{left + (i + 0.5) * cw:.1f},{cb + line_h - v / top_c * line_h:.1f}" for i, v in sums)
        out.append(f'<polyline id="drift-cusum" class="real" points="{pts}"/>')
    for i, a in enumerate(drift["alarm"]):
        if a:
            out.append(f'<rect class="alarm" x="{left + i * cw:.1f}" y="{cb + line_h + 4}" width="{max(cw - 0.5, 0.5):.1f}" '
                       f'height="6"><title>{nights[i]}: drift alarm</title></rect>')
    step = max(1, n // 8)
    for i in range(0, n, step):
        out.append(f'<text x="{left + (i + 0.5) * cw:.1f}" y="{height - 4}" class="tick" text-anchor="middle">{nights[i]}</text>')
    out.append("</svg>")
    legend = ('<div class="legend"><span class="k" style="background:#ffe8d8"></span>effect below its floor '
              '<span class="k" style="background:#ff2d14"></span>2× the floor · ● significant after FDR · '
              'dark border: drifted tonight · dashed red: floor, CUSUM decision interval h · '
              '<span class="k alarm"></span>drift alarm (an episode: the CUSUM reached h)</div>')
    return "".join(out) + legend


# -- the page -----------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#1a202c;background:#fff}
h1{font-size:20px;margin:0 0 4px} h3{font-size:14px;margin:16px 0 6px} h2{font-size:16px;margin:24px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
.sub{color:#4a5568;margin:0 0 12px} .empty{color:#718096}
table{border-collapse:collapse;font-size:13px;width:100%} td,th{border-bottom:1px solid #edf2f7;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f7fafc} .num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 6px;border-radius:8px;font-size:12px;background:#edf2f7}
.PROMOTE,.RETRAIN,.ROLLBACK,.promoted{background:#c6f6d5} .open,.ON_TRIAL{background:#bee3f8}
.rejected,.ended-drift,.ended-newer,.ended-deleted,.ended-champion{background:#fed7d7} .REJECT{background:#fed7d7} .INSUFFICIENT_EVIDENCE,.DEFERRED,.COOLDOWN,.WAIT,.UNCHANGED{background:#feebc8}
.chart{max-width:100%;height:auto} .grid{stroke:#edf2f7} .tick{font-size:10px;fill:#4a5568}
.real{fill:none;stroke:#2b6cb0;stroke-width:1.5} .est{fill:none;stroke:#805ad5;stroke-width:1.5;stroke-dasharray:4 3}
.matured{fill:#2b6cb0} .provisional{fill:#fff;stroke:#2b6cb0;stroke-width:1.5} .cov{fill:#a0aec0;opacity:.6}
.promo{stroke:#38a169;stroke-dasharray:2 2} .cell.drifted{stroke:#1a202c;stroke-width:1} .sig{fill:#1a202c}
.floor{stroke:#e53e3e;stroke-dasharray:3 3} .alarm{fill:#e53e3e}
.legend{font-size:12px;color:#4a5568;margin:4px 0 8px} .k{display:inline-block;width:14px;height:8px;margin:0 4px 0 10px;vertical-align:middle}
.k.real{background:#2b6cb0} .k.est{background:#805ad5} .k.cov{background:#a0aec0} .k.promo{background:#38a169} .k.alarm{background:#e53e3e}
nav a{margin-right:12px} code{font-size:12px}
"""


def render(data: dict[str, Any], *, mlflow_url: str | None = None, api: str = "api") -> str:
    """The whole page."""
    champ = data["champion"]
    title = f"Model health: {E(data['model'])}"
    head = (f"Champion <b id=\"champion-version\">v{E(str(champ['version']))}</b> since the night after {champ['ds']} "
            f"({E(champ['decided_by'])}: {E(champ['reason'])})" if champ else "<b id=\"champion-version\">no champion yet</b>")
    parts = [f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>{_CSS}</style></head><body>",
             f"<h1>{title}</h1><p class=\"sub\">{head}</p>",
             ('<nav><a href="#performance">Performance</a>'
              + ('<a href="#value">Value</a>' if data["performance"].get("value") else "")
              + f'<a href="#drift">Drift</a><a href="#champions">Champions</a>'
              f'<a href="#retrains">Retrain decisions</a><a href="#trial">Shadow trial</a><a href="#verdicts">Verdicts</a>'
              f'<a href="#nights">Nights</a>'
              f' · data: <a href="{api}/page">JSON</a></nav>'),
             f'<h2 id="performance">Performance over time ({E(data["performance"].get("metric") or "")})</h2>',
             performance_svg(data["performance"], data["timeline"]),
             *_value_section(data),
             '<h2 id="drift">Drift per feature and night</h2>', drift_svg(data["drift"]),
             '<h2 id="champions">Champion timeline</h2>', _timeline_table(data["timeline"], mlflow_url),
             '<h2 id="retrains">Retrain decisions</h2>', _retrain_table(data["retrains"]),
             '<h2 id="trial">Shadow trial</h2>', _trial_section(data.get("trial") or {}),
             '<h2 id="verdicts">Gate verdicts and rollbacks</h2>', _verdict_table(data["verdicts"]),
             '<h2 id="nights">Per night</h2>', _nights_table(data["nights"]),
             "</body></html>"]
    return "".join(parts)


def _value_section(data: dict[str, Any]) -> list[str]:
    """The business value chart and the drift episodes' cost: only with a cost matrix (value in the lake)."""
    if not data["performance"].get("value"):
        return []
    value = data.get("value") or {}
    return ['<h2 id="value">Business value</h2>', value_svg(data["performance"], data["timeline"], value.get("currency", "")),
            '<h3>What each drift episode cost before it was answered</h3>', _episodes_table(value),
            ('<p class="sub">Lost: each prediction day of the episode, rows × (the scoring champion\'s value per row on '
             'its gate holdout − the day\'s value per row, realized where labels are known, else estimated), from the '
             'first alarm night through the night of the promotion that answered it. The value per row also moves '
             'with the world, so an answered episode also shows what answering at once would have earned: the '
             'answer\'s value gain per row, as its gate measured it (95% interval), times the rows scored meanwhile.</p>')]


def _badge(v: str | None) -> str:
    return f'<span class="badge {E((v or "").replace(":", "-"))}">{E(v or "–")}</span>'


def _timeline_table(rows: list[dict[str, Any]], mlflow_url: str | None) -> str:
    if not rows:
        return '<p class="empty">No champion yet.</p>'
    out = [("<table id=\"timeline\"><tr><th>from night after</th><th>version</th><th>decided by</th><th>verdict and evidence</th>"
           "<th>segments</th><th>run</th></tr>")]
    for r in reversed(rows):
        run = (f'<a href="{E(mlflow_url)}/#/experiments/0/runs/{E(r["run_id"])}" target="_blank">{E(r["run_id"][:8])}</a>'
               if mlflow_url and r["run_id"] else E((r["run_id"] or "")[:8]))
        out.append(f"<tr><td>{r['ds']}</td><td>v{E(str(r['version']))}"
                   f"{' (was v' + E(str(r['previous'])) + ')' if r['previous'] else ''}</td><td>{E(r['decided_by'])}</td>"
                   f"<td>{E(gate_words(r['verdict'], r['reasons'] or [r['reason']], r['evidence']))}</td>"
                   f"<td>{E(segment_words(r['evidence']))}</td><td>{run}</td></tr>")
    return "".join(out) + "</table>"


def _retrain_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="empty">No retrain was called for.</p>'
    out = ["<table id=\"retrains\"><tr><th>night</th><th>decision</th><th>reasons</th><th>evidence and thresholds</th></tr>"]
    for r in rows:
        out.append(f"<tr><td>{r['ds']}</td><td>{_badge(r['verdict'])}</td><td>{E('; '.join(r['reasons']))}</td>"
                   f"<td>{E(retrain_words(r['evidence'], r['policy'], r.get('signals', [])))}</td></tr>")
    return "".join(out) + "</table>"


def _verdict_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="empty">No retrain has finished yet.</p>'
    out = [("<table id=\"verdicts\"><tr><th>day</th><th>kind</th><th>verdict</th><th>version</th><th>evidence</th>"
           "<th>segments</th></tr>")]
    for r in rows:
        out.append(f"<tr><td>{r['ds']}</td><td>{E(r['kind'])}</td><td>{_badge(r['verdict'])}</td>"
                   f"<td>{'v' + E(str(r['model_version'])) if r['model_version'] else '–'}</td>"
                   f"<td>{E(gate_words(None, r['reasons'], r['evidence'])[4:])}</td><td>{E(segment_words(r['evidence']))}</td></tr>")
    return "".join(out) + "</table>"


def _trial_section(trial: dict[str, Any]) -> str:
    """The open shadow trial (its nights, label coverage so far, running gain), then every trial's latest state."""
    t, out = trial.get("open"), []
    if t is None:
        out.append('<p class="empty" id="trial-none">No shadow trial is open (gate.mode "shadow:N" opens one when the '
                   "offline gate passes a challenger).</p>")
    else:
        nights, run = t.get("nights") or [], t.get("running") or {}
        gain = (f"running gain {number(run.get('gain'), '+.4f')} ({E(str(run.get('metric')))} "
                f"{number(run.get('champion'))} → {number(run.get('candidate'))} on {run.get('labelled')} labelled rows "
                "so far, before maturity)" if run else "no labels yet")
        out.append(f'<p id="trial-open">Candidate <b>v{E(str(t["candidate"]))}</b> beside champion '
                   f'v{E(str(t["champion"]))} since the night after {t["opened_ds"]}: {len(nights)} of '
                   f'{t["nights_planned"]} nights scored, as of {t["ds"]}; {gain}. '
                   f'{E("; ".join(t.get("reasons") or []))}</p>')
        out.append('<table id="trial-nights"><tr><th>night</th><th class="num">rows</th><th class="num">labelled</th>'
                   '<th class="num">coverage</th><th>labels</th></tr>')
        for n in nights:
            out.append(f"<tr><td>{n['ds']}</td><td class=\"num\">{n['rows']:,}</td><td class=\"num\">{n['labelled']:,}</td>"
                       f"<td class=\"num\">{n['coverage']:.0%}</td><td>{'matured' if n['matured'] else 'provisional'}"
                       "</td></tr>")
        out.append("</table>")
    past = [x for x in trial.get("trials") or [] if x is not t]
    if past:
        out.append('<table id="trials"><tr><th>trial</th><th>candidate</th><th>champion</th><th>state</th><th>as of</th>'
                   "<th>evidence</th></tr>")
        for x in past:
            c = x.get("conclusion") or {}
            words = gate_words(c.get("verdict"), x.get("reasons") or [], c) if c else "; ".join(x.get("reasons") or [])
            out.append(f"<tr><td>{E(x['trial'])}</td><td>v{E(str(x['candidate']))}</td><td>v{E(str(x['champion']))}</td>"
                       f"<td>{_badge(x['state'])}</td><td>{x['ds']}</td><td>{E(words)}</td></tr>")
        out.append("</table>")
    return "".join(out)


def _nights_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="empty">No night scored yet.</p>'
    out = [("<table id=\"nights-table\"><tr><th>night</th><th class=\"num\">rows scored</th><th>model version</th>"
           "<th>chosen by</th><th>drift</th></tr>")]
    for r in reversed(rows):
        drift = "ALARM" if r["drift"] else ("no" if r["drift"] is False else "–")
        out.append(f"<tr><td>{r['ds']}</td><td class=\"num\">{r['rows']:,}</td><td>v{E(str(r['model_version']))}</td>"
                   f"<td>{E(str(r['model_selection']))}</td><td>{drift}</td></tr>")
    return "".join(out) + "</table>"


def to_json(data: Any) -> str:
    return json.dumps(data, default=str)
