"""The text summaries the CLI prints: one renderer per report."""

from __future__ import annotations

from collections.abc import Sequence

from ca_export.report.checks import Check, Verdict
from ca_export.report.figures import (
    AccuracyFigures,
    GateFigures,
    KeepAuto,
    LossyFigures,
    MilFigures,
    NcnnFigures,
    StructureFigures,
    WeightsFigures,
)
from ca_export.report.results import (
    BenchReport,
    ExportReport,
    InspectReport,
    OptimizeReport,
    VerifyReport,
)
from ca_export.rewrites.passes import PassResult
from ca_export.verify.lossy import LossyGate


def pass_lines(passes: Sequence[PassResult], block: str) -> list[str]:
    """What the rewrite passes did to one block: the passes applied, then each one skipped."""
    applied = [p.name for p in passes if block in p.applied]
    lines = [f"rewrite passes: {', '.join(applied)}"] if applied else []
    for p in passes:
        if block in p.skipped:
            lines.append(f"pass {p.name} skipped: {p.skipped[block]}")
    return lines


def lossy_lines(gate: LossyGate | LossyFigures, against: str) -> list[str]:
    """A lossy gate as lines: inputs and bounds, then each output's verdict and figures."""
    bounds = gate.bounds
    atol = f", max abs err <= {bounds['atol']:.3g}" if bounds.get("atol") is not None else ""
    inputs = list(gate.inputs)
    lines = [
        f"{gate.precision} ({gate.backend}) vs {against} on {len(inputs)} inputs "
        f"({', '.join(inputs[:3])}{', ...' if len(inputs) > 3 else ''}); bounds: "
        f"top-1 >= {bounds['top1']:.3g}, top-1 in top-5 >= {bounds['top1_in_top5']:.3g}, "
        f"cosine >= {bounds['cosine']}, rel err <= {bounds['rel']}{atol}"
    ]
    for out in gate.outputs:
        figures = f"min cosine {out.min_cosine:.4f}, max rel err {out.max_rel_err:.3g}"
        if out.equal is not None:
            figures = f"equal values {round(out.equal * out.values)}/{out.values}"
        elif out.top1 is not None:
            figures = (
                f"top-1 {round(out.top1 * out.rows)}/{out.rows}, top-1 in top-5 "
                f"{round((out.top1_in_top5 or 0) * out.rows)}/{out.rows}, top-5 set "
                f"{round((out.top5 or 0) * out.rows)}/{out.rows}, {figures}, smallest top-1 "
                f"margin {out.margin:.3g} std"
            )
        lines.append(f"{out.name}: {'passed' if out.passed else 'FAILED'}; {figures}")
    return lines


def accuracy_line(accuracy: AccuracyFigures) -> str:
    """``accuracy on 360 labelled samples (10 classes), A -> B: top-1 98.33 % -> ...``."""
    return (
        f"accuracy on {accuracy.samples} labelled samples ({accuracy.classes} classes), "
        f"{accuracy.reference} -> {accuracy.artifact}: top-1 "
        f"{100 * accuracy.reference_top1:.2f} % -> {100 * accuracy.top1:.2f} % (drop "
        f"{accuracy.drop:.2f} points, bound {accuracy.max_drop:g}), top-5 "
        f"{100 * accuracy.reference_top5:.2f} % -> {100 * accuracy.top5:.2f} %"
    )


def keep_auto_lines(search: KeepAuto) -> list[str]:
    """The ``--keep-fp32 auto`` search: every node int8, each module's sensitivity, each
    step and what was kept."""
    lines = [f"--keep-fp32 auto: every node int8: {search.all_int8}"]
    if search.sensitivity:
        ranked = ", ".join(f"{s.module} {s.value:.4g}" for s in search.sensitivity)
        lines.append(f"  sensitivity (figure with only that module int8): {ranked}")
    lines += [f"  kept {', '.join(s.kept)}: {s.score}" for s in search.steps]
    verdict = "within bounds" if search.passed else "not within bounds: int8 fails"
    lines.append(f"  kept fp32: {', '.join(search.kept) or 'nothing'} ({verdict})")
    return lines


def render_inspect(report: InspectReport) -> str:
    """The text table ``inspect`` prints."""
    lines = [f"{len(report.ca_blocks)} CA block(s) in {report.source}"]
    for i, block in enumerate(report.ca_blocks):
        variant = ", ".join(f"{k}={v}" for k, v in block.variant.items())
        lines.append(f"  [{i}] {block.module}: C={block.channels} mip={block.mip} ({variant})")
        lines += [f"      {finding}" for finding in block.findings]
        lines += [f"      {line}" for line in pass_lines(report.passes, block.id)]
    if report.rejected:
        lines.append("not CA:")
        lines += [f"  {r.module} ({r.node}): {r.reason}" for r in report.rejected]
    return "\n".join(lines + report.notices)


VERDICTS = {
    Verdict.PASSED: "passed",
    Verdict.FAILED: "FAILED",
    Verdict.NOT_RUN: "not run",
    Verdict.NOT_VERIFIED: "NOT VERIFIED",
}
"""How a check's verdict is printed (an accepted NOT_VERIFIED in lower case)."""


def _check_lines(check: Check) -> list[str]:
    """A check's verdict (and why), the lines of its figures and its failures, each once."""
    verdict = VERDICTS[check.verdict]
    if check.accepted:
        verdict = verdict.lower()
    reason = f" ({check.reason})" if check.reason else ""
    lines = [f"check {check.name}: {verdict}{reason}"]
    figures = check.figures
    if isinstance(figures, LossyFigures) and check.ran:
        search = figures.keep_fp32_auto
        lines += [f"  {line}" for line in keep_auto_lines(search)] if search else []
        lines += [f"  {line}" for line in lossy_lines(figures, figures.reference)]
    if isinstance(figures, AccuracyFigures) and check.ran:
        lines.append(f"  {accuracy_line(figures)}")
    if isinstance(figures, WeightsFigures) and check.ran:
        lines.append(f"  {_weights_line(figures)}")
    failures = getattr(figures, "failures", ())
    lines += [f"  failed: {line}" for line in failures]
    if isinstance(figures, MilFigures) and figures.fp32_arithmetic is not None:
        lines += _arithmetic_lines(figures)
    return lines


def _arithmetic_lines(figures: MilFigures) -> list[str]:
    """The fp32-arithmetic check of an fp16 Core ML program."""
    arithmetic = figures.fp32_arithmetic
    if arithmetic is None:
        return []
    if not arithmetic.ran:
        return [f"  fp32 arithmetic: not run ({arithmetic.reason})"]
    lines = [
        f"  fp32 arithmetic: {'passed' if arithmetic.passed else 'FAILED'}; rel err "
        f"{arithmetic.rel_err:.3g} (margin {arithmetic.margin:.3g}), "
        f"{arithmetic.fp16_constants} fp16 constants, "
        f"{len(arithmetic.constant_mismatches)} not their fp32 value rounded"
    ]
    lines += [f"  failed: {line}" for line in arithmetic.failures]
    return lines + [f"  failed: {line}" for line in arithmetic.constant_mismatches]


def _gate_line(what: str, gate: GateFigures) -> str:
    """One gate's verdict and worst figures."""
    verdict = "FAILED" if gate.failures else "passed"
    return (
        f"{what} ({gate.backend}, {gate.inputs} inputs): {verdict}; "
        f"margin {gate.max_margin:.3g} (1 = bound), max abs err "
        f"{gate.max_abs_err:.3g}, rel err {gate.max_rel_err:.3g}"
    )


def _structure_lines(structure: StructureFigures) -> list[str]:
    """CA-only nodes left, where, the dynamic sizes, the delegate segments and the
    TRANSPOSE ops left (LiteRT)."""
    lines = [f"CA-only nodes ({structure.ops}) left: {structure.ca_only_nodes_after}"]
    if structure.in_blocks_not_rewritten:
        lines.append(f"  in blocks not rewritten: {structure.in_blocks_not_rewritten}")
    for module, counts in structure.in_unmatched_concats.items():
        listed = ", ".join(f"{k} {v}" for k, v in counts.items())
        lines.append(f"  in {module} (not matched as CA): {listed}")
    for axis, span in structure.dynamic_sizes.items():
        step = f", multiples of {span.multiple_of}" if span.multiple_of > 1 else ""
        lines.append(f"dynamic {axis.upper()}: {span.min} to {span.max}{step}")
    if structure.segments is not None:
        lines.append(f"XNNPACK delegate segments: {structure.segments}")
        lines += [f"  outside: {o.op} ({o.module or '<model>'})" for o in structure.outside]
    lines += [f"  TRANSPOSE left: {o.node} ({o.module or '<model>'})" for o in structure.transposes]
    return lines


def _dims(shape: Sequence[int]) -> str:
    """``224x224``."""
    return "x".join(map(str, shape))


def _ncnn_lines(structure: NcnnFigures, parity: GateFigures | None) -> list[str]:
    """An ncnn model's layers, the sizes it is valid at, the layers with a baked size, and
    the parity gate at each size it ran at."""
    lines = [f"ncnn layers: {structure.layers}; valid at {structure.valid()}"]
    lines += [f"  baked size: {finding}" for finding in structure.baked_sizes]
    if parity is not None:
        gated = ", ".join(
            f"{_dims(s[2:])} {'passed' if ok else 'FAILED'}" for s, ok in parity.by_size().items()
        )
        lines.append(f"gated at: {gated}")
    return lines


def render_export(report: ExportReport) -> str:
    """The summary printed after an export."""
    rewritten = sum(b.rewritten for b in report.ca_blocks)
    target = f" for {report.target}" if report.target and rewritten else ""
    lines = [f"CA blocks: {len(report.ca_blocks)} found, {rewritten} rewritten{target}"]
    lines += [f"  {b.module}: {f}" for b in report.ca_blocks for f in b.findings]
    lines += [f"  not CA: {r.module} ({r.node}): {r.reason}" for r in report.rejected]
    lines.append(f"nodes: {_counts(report.op_counts_after)}")
    structure = report.structure.figures if report.structure is not None else None
    parity = report.parity.figures if report.parity is not None else None
    if isinstance(structure, StructureFigures):
        lines += _structure_lines(structure)
    if isinstance(structure, NcnnFigures):
        lines += _ncnn_lines(structure, parity if isinstance(parity, GateFigures) else None)
    for check in report.checks.values():
        lines += _check_lines(check)
    if isinstance(parity, GateFigures):
        lines.append(_gate_line("parity vs PyTorch", parity))
        lines += [f"  failed: {line}" for line in parity.failures]
        for where, blocks in (("torch", parity.blocks), (parity.backend, parity.runtime_blocks)):
            if blocks is not None:
                verdict = "FAILED" if blocks.failures else "passed"
                worst = f"rel err {blocks.max_rel_err:.3g}, margin {blocks.max_margin:.3g}"
                lines.append(f"per-block parity ({where}): {verdict}; {worst}")
                lines += [f"  failed: {line}" for line in blocks.failures]
    if report.artifact:
        size = report.artifact["bytes"] / 1e6
        lines.append(f"wrote {report.artifact['path']} ({size:.2f} MB)")
        if "ort" in report.artifact:
            ort_size = report.artifact["ort_bytes"] / 1e6
            config = report.artifact["ort_config"]
            lines.append(f"wrote {report.artifact['ort']} ({ort_size:.2f} MB) and {config}")
    else:
        lines.append("no artifact written")
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in report.stages.items())
    lines.append(f"time: {stages}")
    lines += [f"notice: {n}" for n in report.notices]
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def _weights_line(weights: WeightsFigures) -> str:
    """The compressed weights' figures (their failures are the check's own lines)."""
    top1 = weights.min_top1
    return (
        f"{weights.format} in PyTorch vs fp32: rel err {weights.max_rel_err:.3g}, "
        f"min cosine {weights.min_cosine:.6f}"
        + ("" if top1 is None else f", top-1 agreement {top1:.2f}")
        + f"; {weights.weights_placed} weights placed, "
        f"{weights.factors_fitted} fitted, {weights.weights_unmatched} unmatched"
    )


def _counts(counts: dict[str, int]) -> str:
    """``Conv 52, Mul 48, ...`` with the total first."""
    total = sum(counts.values())
    return f"{total} total: " + ", ".join(f"{k} {v}" for k, v in counts.items())


def render_optimize(report: OptimizeReport) -> str:
    """The summary printed after ``optimize``."""
    rewritten = sum(b.rewritten for b in report.ca_blocks)
    lines = []
    norm = report.normalize
    if norm.get("modified"):
        (c0, c1), (n0, n1) = norm["constants"], norm["nodes"]
        lines.append(
            f"normalized: constants folded ({c0} Constant nodes -> {c1}, {n0} nodes -> {n1})"
        )
    target = f" for {report.target}" if report.target and rewritten else ""
    lines.append(f"CA blocks: {len(report.ca_blocks)} found, {rewritten} rewritten{target}")
    for b in report.ca_blocks:
        variant = ", ".join(f"{k}={v}" for k, v in b.variant.items())
        lines.append(f"  {b.module}: C={b.channels} mip={b.mip} ({variant})")
        lines += [f"    {f}" for f in b.findings]
    lines += [f"  skipped {s['node']}: {s['reason']}" for s in report.skipped]
    if report.op_counts_after:
        lines.append(f"nodes before: {_counts(report.op_counts_before)}")
        lines.append(f"nodes after:  {_counts(report.op_counts_after)}")
    structure = report.structure.figures if report.structure is not None else None
    if isinstance(structure, StructureFigures):
        lines.append(f"CA-only nodes ({structure.ops}) left: {structure.ca_only_nodes_after}")
    if report.dynamic.get("requested"):
        if report.dynamic.get("applied"):
            dyn = report.dynamic
            verdict = "ran" if dyn.get("passed") else "FAILED to run"
            error = f": {dyn['error']}" if dyn.get("error") else ""
            lines.append(f"dynamic H/W: {dyn['dims']}; {verdict} at {dyn.get('ran_at')}{error}")
        else:
            lines.append(f"dynamic H/W not applied: {report.dynamic['reason']}")
    parity = report.parity.figures if report.parity is not None else None
    if isinstance(parity, GateFigures):
        lines.append(_gate_line("parity OUT vs IN", parity))
        lines += [f"  failed: {line}" for line in parity.failures]
    for check in report.checks.values():
        lines += _check_lines(check)
    if report.artifact:
        lines.append(f"wrote {report.artifact['path']} ({report.artifact['bytes'] / 1e6:.2f} MB)")
    else:
        lines.append("no file written")
    lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.stages.items()))
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


LOSSY_REFERENCE = "PyTorch fp32"
"""What verify's lossy gate compares a file with."""


def render_verify(report: VerifyReport) -> str:
    """One line per artifact and shape, the failures, and where outputs diverge."""
    lines = []
    for artifact in report.artifacts:
        ran = any(c.skipped is None for c in artifact.cases)
        verdict = "passed" if artifact.passed else "FAILED" if ran else "NOT VERIFIED"
        lines.append(f"{artifact.path} ({artifact.dtype}, {artifact.backend}): {verdict}")
        for case in artifact.cases:
            shape = "x".join(map(str, case.input_shape))
            if case.skipped:
                lines.append(f"  {shape} {case.input}: skipped ({case.skipped})")
                continue
            for c in case.comparisons:
                mark = "ok  " if c.passed else "FAIL"
                top = "" if c.top1 is None else f", top-1 {c.top1:.2f}, top-5 {c.top5:.2f}"
                figures = c.note or (
                    f"{c.describe()}, cosine {c.cosine:.9f}, PSNR {c.psnr:.1f} dB{top}"
                )
                lines.append(f"  {mark} {shape} {case.input} {c.name}: {figures}")
        if artifact.lossy is not None:
            first, *outputs = lossy_lines(artifact.lossy, LOSSY_REFERENCE)
            lines.append(f"  lossy gate: {first}")
            lines += [f"    {line}" for line in outputs]
            lines += [f"  failed: {line}" for line in artifact.lossy.failures()]
        if artifact.accuracy is not None:
            lines += [f"  {line}" for line in _check_lines(artifact.accuracy)]
        loc = artifact.localization
        if loc is not None:
            if loc.first_divergence:
                layer = next(x for x in loc.layers if x.module == loc.first_divergence)
                where = " (inside a CA block)" if layer.ca_block else ""
                lines.append(
                    f"  first divergence: module {loc.first_divergence}{where}, "
                    f"rel err {layer.rel_err:.3g}"
                )
            else:
                lines.append(f"  localisation: {loc.note or 'no module diverges past the bound'}")
    return "\n".join(lines + [f"notice: {n}" for n in report.notices])


def render_bench(report: BenchReport, top: int = 8) -> str:
    """The latency table, each layout side by side (ratios against the first model), the
    form of each CA block, and the op breakdown."""
    names = list(report.models)
    first = names[0]
    layouts = list(report.config.layouts)
    width = max(len(n) for n in names) + 2
    lines = [f"input {report.input_shape}, ratios against {first!r} (same run, same threads)"]
    for threads in report.config.threads:
        lines.append(f"threads {threads}")
        head = "".join(f"{f'{lay} p50 ms':>17}{'p90':>8}{'x p50':>8}" for lay in layouts)
        lines.append(f"  {'model':{width}}{head}")
        for name in names:
            row = f"  {name:{width}}"
            for layout in layouts:
                if not any(
                    t.name == name and t.threads == threads and t.layout == layout
                    for t in report.timings
                ):
                    row += f"{'-':>17}{'-':>8}{'-':>8}"
                    continue
                t = report.timing(name, threads, layout)
                ratio = report.ratio(name, first, threads, layout=layout)
                row += f"{t.p50_ms:17.2f}{t.p90_ms:8.2f}{ratio:8.3f}"
            lines.append(row)
    for name, blocks in report.forms.items():
        lines.append(f"CA block forms in {name!r}:")
        lines += [f"  {block}: {form}" for block, form in blocks.items()] or ["  (no CA block)"]
    if report.breakdown:
        lines.append(
            f"op time, ms per run (ORT profile, {report.config.threads[0]} thread(s), "
            f"{layouts[0]} layout)"
        )
        ops: dict[str, float] = {}
        for per_op in report.breakdown.values():
            for op, ms in per_op.items():
                ops[op] = max(ops.get(op, 0.0), ms)
        shown = sorted(ops, key=lambda op: -ops[op])[:top]
        profiled = [n for n in names if n in report.breakdown]
        cols = [n[: width + 4] for n in profiled]
        lines.append(f"  {'op':16}" + "".join(f"{c:>{max(len(c), 8) + 1}}" for c in cols))
        for op in [*shown, "total"]:
            row = f"  {op:16}"
            for name, col in zip(profiled, cols, strict=True):
                per_op = report.breakdown[name]
                ms = sum(per_op.values()) if op == "total" else per_op.get(op, 0.0)
                row += f"{ms:{max(len(col), 8) + 1}.2f}"
            lines.append(row)
    return "\n".join(lines)
