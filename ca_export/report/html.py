"""One self-contained HTML page of one or more runs, with plots, for a reviewer.

The page holds a summary verdict of every run, then one section per subject (checks,
parity against each bound, divergence per layer, latency, op counts, passes per block,
what ran outside the XNNPACK delegate); within a section the runs stand side by side.
Every plot is drawn by matplotlib and inlined as SVG (text kept as text), with the
figures it plots in a table beneath it; the page loads nothing from the network.

The page is put together with f-strings and ``html.escape``: it is a handful of tables and
figures, which a template engine would only move into another file.
"""

from __future__ import annotations

import functools
import io
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape

import matplotlib
from matplotlib.figure import Figure

from ca_export.files import HTML_HEAD
from ca_export.report.checks import Check, Verdict
from ca_export.report.figures import AccuracyFigures, GateFigures, NcnnFigures, StructureFigures
from ca_export.report.results import (
    BenchReport,
    ExportReport,
    OptimizeReport,
    Timing,
    VerifyReport,
)
from ca_export.report.text import VERDICTS
from ca_export.verify.localize import Localization

Report = ExportReport | OptimizeReport | VerifyReport | BenchReport
"""Any report the page shows."""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.5em; }
.runs { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.run { flex: 1 1 420px; min-width: 0; }
.run h3 { font-size: 1em; margin: 0.3em 0; }
table { border-collapse: collapse; margin: 0.4em 0; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.passed { color: #176b1a; font-weight: bold; } .failed { color: #b00020; font-weight: bold; }
.other { color: #8a5a00; font-weight: bold; }
.plot { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
figure { margin: 0.4em 0; flex: 0 1 640px; } figure svg { max-width: 100%; height: auto; }
summary { font-size: 0.9em; color: #555; cursor: pointer; }
figcaption { font-size: 0.9em; color: #555; }
"""

SVG_METADATA = ("Creator", "Date", "Format", "Type")
"""matplotlib's SVG metadata, all left out."""

BOUND = "#b00020"
"""The colour of a bound line and of a bar past it."""


@dataclass(frozen=True)
class Run:
    """A report and the name it goes by on the page."""

    name: str
    report: Report


def render_html(runs: Sequence[Run]) -> str:
    """The page of ``runs``, side by side."""
    body = [f"<h1>ca-export report: {len(runs)} run(s)</h1>", _summary(runs)]
    for section, title, part in SECTIONS:
        cards = [(run, part(run.report)) for run in runs]
        shown = [
            f'<div class="run" data-run="{escape(run.name)}"><h3>{escape(run.name)}</h3>'
            f"{content}</div>"
            for run, content in cards
            if content
        ]
        if shown:
            body.append(
                f'<section id="{section}"><h2>{title}</h2>'
                f'<div class="runs">{"".join(shown)}</div></section>'
            )
    return (
        f'{HTML_HEAD}\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>ca-export report</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def _summary(runs: Sequence[Run]) -> str:
    """The verdict of every run, what it ran on, and the checks that failed."""
    rows = []
    for run in runs:
        report = run.report
        passed = _passed(report)
        rows.append(
            [
                escape(run.name),
                report.kind,
                escape(_subject(report)),
                _verdict_cell("passed" if passed else "FAILED", _css(passed)),
                escape(", ".join(_failed(report))),
            ]
        )
    head = ["run", "kind", "subject", "verdict", "failed"]
    verdicts = [_passed(run.report) for run in runs]
    overall = "passed" if all(verdicts) else "FAILED"
    return (
        f'<section id="summary"><h2>Summary: <span class="{_css(all(verdicts))}" '
        f'data-verdict="{overall}">{overall}</span></h2>{_table(head, rows, "summary")}</section>'
    )


def _passed(report: Report) -> bool:
    """A run's verdict (a bench run has no gate of its own: its exports passed theirs)."""
    return True if isinstance(report, BenchReport) else report.passed


def _subject(report: Report) -> str:
    """What the run ran on: source, format and target, or the models timed."""
    if isinstance(report, ExportReport):
        target = f" for {report.target}" if report.target else ""
        return f"{report.source} -> {report.format}{target}, input {report.input_shape}"
    if isinstance(report, OptimizeReport):
        target = f" for {report.target}" if report.target else ""
        return f"{report.source} (opset {report.opset}){target}"
    if isinstance(report, VerifyReport):
        return f"{report.source}: {', '.join(a.path for a in report.artifacts)}"
    return f"{', '.join(report.models)} at input {report.input_shape}"


def _failed(report: Report) -> list[str]:
    """The names of the checks (or artifacts) that do not count as passed."""
    if isinstance(report, (ExportReport, OptimizeReport)):
        return [c.name for c in _checks(report) if not c.ok] + [
            gate for gate in ("structure", "parity") if getattr(report, gate) is None
        ]
    if isinstance(report, VerifyReport):
        return [a.path for a in report.artifacts if not a.passed]
    return []


def _checks(report: ExportReport | OptimizeReport) -> list[Check]:
    """The gates, then every other check."""
    gates = [c for c in (report.structure, report.parity) if c is not None]
    return gates + [c for name, c in report.checks.items() if name not in ("structure",)]


def _checks_part(report: Report) -> str:
    """Each check's verdict and reason."""
    if not isinstance(report, (ExportReport, OptimizeReport)):
        return ""
    rows = [
        [escape(c.name), _verdict_cell(VERDICTS[c.verdict], _check_css(c)), escape(c.reason)]
        for c in _checks(report)
    ]
    return _table(["check", "verdict", "reason"], rows)


def _parity_part(report: Report) -> str:
    """Each block's (or output's) worst error over its bound: 1 is the bound."""
    bars: list[tuple[str, float]] = []
    what = ""
    if isinstance(report, (ExportReport, OptimizeReport)) and report.parity is not None:
        gate = report.parity.figures
        if isinstance(gate, GateFigures):
            for where, blocks, prefix in (
                ("torch", gate.blocks, ""),
                (gate.backend, gate.runtime_blocks, f"{gate.backend}: "),
            ):
                if blocks is not None:
                    what += f"per CA block ({where}), then "
                    bars += [(prefix + n, m) for n, m in _worst_margins(blocks)]
            outputs = _worst_margins(gate)
            bars += [(f"output {n}", m) for n, m in outputs] if bars else outputs
            what += "per output"
    if isinstance(report, VerifyReport):
        what = "per artifact and output"
        for artifact in report.artifacts:
            for case in artifact.cases:
                for c in case.comparisons:
                    bars.append((f"{_short(artifact.path)}: {c.name}", c.margin))
        bars = _worst(bars)
    if not bars:
        return ""
    svg = _figure(functools.partial(_margin_bars, bars), height=0.8 + 0.32 * len(bars))
    rows = [[escape(name), _num(margin)] for name, margin in bars]
    caption = f"worst error over its bound {what}, over every input (1 = bound)"
    return _with_table("parity", svg, caption, ["compared", "margin"], rows)


def _worst_margins(gate: GateFigures) -> list[tuple[str, float]]:
    """The worst margin of each comparison name over the gate's cases."""
    return _worst([(c.name, c.margin) for _, c in gate.comparisons()])


def _worst(pairs: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """The largest value per name, in first-seen order."""
    worst: dict[str, float] = {}
    for name, value in pairs:
        worst[name] = max(worst.get(name, value), value)
    return list(worst.items())


def _margin_bars(bars: list[tuple[str, float]], fig: Figure) -> None:
    """One bar per name: its worst error over its bound, and the bound."""
    ax = fig.add_subplot()
    names = [name for name, _ in bars]
    values = [value for _, value in bars]
    colours = [BOUND if v > 1 else "#3b7dd8" for v in values]
    ax.barh(range(len(bars)), values, color=colours)
    ax.set_yticks(range(len(bars)), names)
    ax.invert_yaxis()
    ax.axvline(1.0, color=BOUND, linestyle="--", label="bound")
    ax.set_xlabel("error / bound")
    ax.set_xlim(0, max(1.1, max(values) * 1.1))
    ax.legend(loc="best")


def _localisation_part(report: Report) -> str:
    """Verify's per-layer error of each artifact that has one."""
    if not isinstance(report, VerifyReport):
        return ""
    parts = []
    for artifact in report.artifacts:
        loc = artifact.localization
        if loc is None or not loc.layers:
            continue
        layers = loc.layers
        first = loc.first_divergence or "none"
        caption = f"{_short(artifact.path)}: error per layer; first divergence: {first}"
        rows = [
            [
                escape(layer.module),
                _num(layer.rel_err),
                "yes" if layer.diverged else "",
                "yes" if layer.ca_block else "",
            ]
            for layer in layers
        ]
        parts.append(
            _with_table(
                "localisation",
                _figure(functools.partial(_layer_errors, loc), height=3.2),
                caption,
                ["module", "rel err", "diverged", "CA block"],
                rows,
            )
        )
    return "".join(parts)


def _layer_errors(loc: Localization, fig: Figure) -> None:
    """Each module's error in the order the modules ran, CA blocks shaded."""
    ax = fig.add_subplot()
    errors = [max(layer.rel_err, 1e-12) for layer in loc.layers]
    ax.plot(range(len(errors)), errors, marker=".")
    for i, layer in enumerate(loc.layers):
        if layer.ca_block:
            ax.axvspan(i - 0.5, i + 0.5, color="#f2d16b", alpha=0.4, lw=0)
        if layer.module == loc.first_divergence:
            ax.annotate(f"first divergence: {layer.module}", (i, errors[i]), color=BOUND)
    ax.set_yscale("log")
    ax.set_xlabel("module, in the order they ran (shaded: CA blocks)")
    ax.set_ylabel("rel err")


def _latency_part(report: Report) -> str:
    """Latency distributions, ratios to stock and to the no-CA net, and the top ops."""
    if not isinstance(report, BenchReport):
        return ""
    parts = []
    for threads in report.config.threads:
        timings = [t for t in report.timings if t.threads == threads]
        if not timings:
            continue
        rows = []
        for t in timings:
            rows.append(
                [escape(f"{t.name}@{t.layout}"), str(t.runs), _num(t.p50_ms), _num(t.p90_ms)]
                + [_ratio(report, t.name, ref, threads, t.layout) for ref in ("stock", "baseline")]
            )
        head = ["model", "runs", "p50 ms", "p90 ms", "x stock (p50)", "x no-CA (p50)"]
        caption = f"{threads} thread(s): every timed run, interleaved"
        svg = _figure(functools.partial(_latency_boxes, timings), height=1 + 0.35 * len(timings))
        parts.append(_with_table("latency", svg, caption, head, rows))
    if report.breakdown:
        parts.append(_top_ops(report))
    return "".join(parts)


def _latency_boxes(timings: list[Timing], fig: Figure) -> None:
    """A box of every timed run per model and layout."""
    ax = fig.add_subplot()
    labels = [f"{t.name}@{t.layout}" for t in timings]
    ax.boxplot([t.samples_ms for t in timings], orientation="horizontal", tick_labels=labels)
    ax.invert_yaxis()
    ax.set_xlabel("latency per run (ms)")


def _ratio(report: BenchReport, name: str, reference: str, threads: int, layout: str) -> str:
    """``name``'s p50 over ``reference``'s, from the same run (empty without both)."""
    have = {(t.name, t.threads, t.layout) for t in report.timings}
    if {(name, threads, layout), (reference, threads, layout)} <= have:
        return _num(report.ratio(name, reference, threads, layout=layout))
    return ""


def _top_ops(report: BenchReport, top: int = 8) -> str:
    """The ops that take the most time, per model, as grouped bars."""
    ops: dict[str, float] = {}
    for per_op in report.breakdown.values():
        for op, ms in per_op.items():
            ops[op] = max(ops.get(op, 0.0), ms)
    shown = sorted(ops, key=lambda op: -ops[op])[:top]
    models = list(report.breakdown)

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        width = 0.8 / len(models)
        for i, name in enumerate(models):
            values = [report.breakdown[name].get(op, 0.0) for op in shown]
            ax.barh([j + i * width for j in range(len(shown))], values, width, label=name)
        ax.set_yticks([j + 0.4 - width / 2 for j in range(len(shown))], shown)
        ax.invert_yaxis()
        ax.set_xlabel("ms per run (ORT profile)")
        ax.legend(loc="best")

    rows = [[escape(op)] + [_num(report.breakdown[m].get(op, 0.0)) for m in models] for op in shown]
    svg = _figure(draw, height=1 + 0.4 * len(shown))
    caption = f"top {len(shown)} ops by time, {report.config.threads[0]} thread(s)"
    return _with_table("top-ops", svg, caption, ["op", *map(escape, models)], rows)


def _ops_part(report: Report) -> str:
    """Op counts before and after, per op type."""
    if isinstance(report, OptimizeReport) and report.op_counts_after:
        before, after = report.op_counts_before, report.op_counts_after
        what = "nodes of the model"
    elif isinstance(report, ExportReport) and report.ca_blocks:
        before, after = {}, {}
        for block in report.ca_blocks:
            for op, n in block.ca_only_nodes_before.items():
                before[op] = before.get(op, 0) + n
            for op, n in block.ca_only_nodes_after.items():
                after[op] = after.get(op, 0) + n
        what = "CA-only ops of every block"
    else:
        return ""
    names = sorted(
        set(before) | set(after), key=lambda op: -max(before.get(op, 0), after.get(op, 0))
    )
    if not names:
        return ""

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        y = range(len(names))
        ax.barh([i - 0.2 for i in y], [before.get(op, 0) for op in names], 0.4, label="before")
        ax.barh([i + 0.2 for i in y], [after.get(op, 0) for op in names], 0.4, label="after")
        ax.set_yticks(list(y), names)
        ax.invert_yaxis()
        ax.set_xlabel("count")
        ax.legend(loc="best")

    rows = [[escape(op), str(before.get(op, 0)), str(after.get(op, 0))] for op in names]
    svg = _figure(draw, height=1 + 0.3 * len(names))
    caption = f"{what}, before and after the rewrite"
    return _with_table("ops", svg, caption, ["op", "before", "after"], rows)


def _passes_part(report: Report) -> str:
    """For each block, the passes applied and those skipped, with their reasons."""
    if not isinstance(report, (ExportReport, OptimizeReport)) or not report.ca_blocks:
        return ""
    rows = []
    for block in report.ca_blocks:
        for p in report.passes:
            if block.id in p.applied:
                rows.append(
                    [escape(block.id), escape(p.name), "applied", escape(p.applied[block.id])]
                )
            elif block.id in p.skipped:
                rows.append(
                    [escape(block.id), escape(p.name), "skipped", escape(p.skipped[block.id])]
                )
        if not any(block.id in p.applied or block.id in p.skipped for p in report.passes):
            rows.append([escape(block.id), "", "not rewritten", ""])
    return _table(["block", "pass", "", "what / why"], rows, "passes")


def _delegate_part(report: Report) -> str:
    """What an ExecuTorch program or a LiteRT file runs outside its XNNPACK delegate, and
    the TRANSPOSE ops a LiteRT file keeps."""
    if not isinstance(report, ExportReport) or report.structure is None:
        return ""
    structure = report.structure.figures
    if not isinstance(structure, StructureFigures) or structure.segments is None:
        return ""
    rows = [
        [
            escape(o.op),
            escape(o.node),
            escape(o.module or "<model>"),
            "" if o.block is None else str(o.block),
            where,
        ]
        for where, ops in (("outside", structure.outside), ("transpose", structure.transposes))
        for o in ops
    ]
    head = (
        f"<p>{structure.segments} delegate segment(s); {len(structure.outside)} op(s) outside"
        + (f"; {len(structure.transposes)} TRANSPOSE op(s)" if structure.transposes else "")
        + "</p>"
    )
    columns = ["op", "node", "module", "CA block", ""]
    return head + (_table(columns, rows, "outside") if rows else "")


def _accuracy_part(report: Report) -> str:
    """Top-1 and top-5 of the fp32 model and of each artifact on the labelled set."""
    checks: list[tuple[str, Check]] = []
    if isinstance(report, ExportReport) and "accuracy" in report.checks:
        checks = [(report.format, report.checks["accuracy"])]
    if isinstance(report, VerifyReport):
        checks = [(_short(a.path), a.accuracy) for a in report.artifacts if a.accuracy]
    rows = []
    for name, check in checks:
        figures = check.figures
        if not isinstance(figures, AccuracyFigures):
            continue
        rows.append(
            [
                escape(name),
                str(figures.samples),
                _num(100 * figures.reference_top1),
                _num(100 * figures.top1),
                _num(100 * figures.reference_top5),
                _num(100 * figures.top5),
                _num(figures.drop),
                _num(figures.max_drop),
                _verdict_cell(VERDICTS[check.verdict], _check_css(check)),
            ]
        )
    if not rows:
        return ""
    head = ["artifact", "samples", "top-1 fp32 %", "top-1 %", "top-5 fp32 %", "top-5 %"]
    return _table([*head, "drop (points)", "bound", "verdict"], rows, "accuracy")


def _ncnn_part(report: Report) -> str:
    """An ncnn model's valid sizes, the layers in which pnnx baked the traced size, and the
    parity gate at each size."""
    if not isinstance(report, ExportReport) or report.structure is None:
        return ""
    structure = report.structure.figures
    if not isinstance(structure, NcnnFigures):
        return ""
    head = f"<p>{structure.layers} layers; valid at {escape(structure.valid())}</p>"
    baked = [[escape(finding)] for finding in structure.baked_sizes]
    parts = [head, _table(["layer with a baked size"], baked, "baked") if baked else ""]
    gate = report.parity.figures if report.parity is not None else None
    if isinstance(gate, GateFigures):
        rows = [
            ["x".join(map(str, shape)), _verdict_cell("passed" if ok else "FAILED", _css(ok))]
            for shape, ok in gate.by_size().items()
        ]
        parts.append(_table(["input shape", "parity"], rows, "sizes"))
    return "".join(parts)


SECTIONS: list[tuple[str, str, Callable[[Report], str]]] = [
    ("checks", "Checks", _checks_part),
    ("parity", "Parity against each bound", _parity_part),
    ("accuracy", "Accuracy on the labelled set", _accuracy_part),
    ("localisation", "Where outputs diverge", _localisation_part),
    ("latency", "Latency", _latency_part),
    ("ops", "Op counts", _ops_part),
    ("passes", "Passes per block", _passes_part),
    ("delegate", "Outside the XNNPACK delegate", _delegate_part),
    ("ncnn", "ncnn sizes", _ncnn_part),
]
"""Each section: its id, title, and what it shows of one report (empty: nothing)."""


_figures = itertools.count()
"""Numbers the figures, so that each one's SVG ids (clip paths) are its own on the page."""


def _figure(draw: Callable[[Figure], None], height: float) -> str:
    """A matplotlib figure drawn by ``draw`` as inline SVG, text kept as text."""
    salt = f"ca-export-{next(_figures)}"
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig = Figure(figsize=(6.4, min(max(height, 2.0), 12.0)), layout="constrained")
        draw(fig)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata=dict.fromkeys(SVG_METADATA))
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def _with_table(name: str, svg: str, caption: str, head: list[str], rows: list[list[str]]) -> str:
    """A figure, its caption and the table of what it plots."""
    return (
        f'<div class="plot"><figure data-figure="{name}">{svg}'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
        f"<details open><summary>figures</summary>{_table(head, rows, name)}</details></div>"
    )


def _table(head: list[str], rows: list[list[str]], name: str = "") -> str:
    """An HTML table; cells are HTML already."""
    data = f' data-table="{name}"' if name else ""
    header = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table{data}><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _cell(content: str) -> str:
    return content if content.startswith("<td") else f"<td>{content}</td>"


def _num(value: float) -> str:
    return f'<td class="num">{value:.4g}</td>'


def _verdict_cell(verdict: str, css: str) -> str:
    return f'<td class="{css}">{escape(verdict)}</td>'


def _css(ok: bool) -> str:
    return "passed" if ok else "failed"


def _check_css(check: Check) -> str:
    """``passed``, ``failed``, or ``other`` for a check accepted without a pass."""
    if check.ok and check.verdict is not Verdict.PASSED:
        return "other"
    return _css(check.ok)


def _short(path: str) -> str:
    """A path's last part."""
    return re.split(r"[\\/]", path.rstrip("/\\"))[-1]
