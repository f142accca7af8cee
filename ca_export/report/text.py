"""The text summaries the CLI prints: one renderer per report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ca_export.report.checks import Check, Verdict
from ca_export.report.results import ExportReport, InspectReport, OptimizeReport, VerifyReport
from ca_export.verify.lossy import describe


def pass_lines(passes: list[dict[str, Any]], block: str) -> list[str]:
    """What the rewrite passes did to one block: the passes applied, then each one skipped."""
    applied = [p["name"] for p in passes if block in p["applied"]]
    lines = [f"rewrite passes: {', '.join(applied)}"] if applied else []
    for p in passes:
        if block in p["skipped"]:
            lines.append(f"pass {p['name']} skipped: {p['skipped'][block]}")
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


def _check_lines(check: Check, figures: Sequence[str] = ()) -> list[str]:
    """A check's verdict (and why), its lines, ``figures`` (lines a renderer adds about this
    check) and its failures, each failure once."""
    verdict = VERDICTS[check.verdict]
    if check.accepted:
        verdict = verdict.lower()
    reason = f" ({check.reason})" if check.reason else ""
    lines = [f"check {check.name}: {verdict}{reason}"]
    lines += [f"  {line}" for line in check.details.get("lines", [])]
    lines += [f"  {line}" for line in figures]
    return lines + [f"  failed: {line}" for line in check.details.get("failures", [])]


def render_export(report: ExportReport) -> str:
    """The summary printed after an export."""
    rewritten = sum(b.rewritten for b in report.ca_blocks)
    target = f" for {report.target}" if report.target and rewritten else ""
    lines = [f"CA blocks: {len(report.ca_blocks)} found, {rewritten} rewritten{target}"]
    lines += [f"  {b.module}: {f}" for b in report.ca_blocks for f in b.findings]
    lines += [f"  not CA: {r.module} ({r.node}): {r.reason}" for r in report.rejected]
    lines.append(f"nodes: {_counts(report.op_counts_after)}")
    if report.structure is not None and report.structure.details:
        structure = report.structure.details
        ops = structure.get("ops", "Transpose/Concat/Split/Slice/Shape/Gather")
        left = structure.get("ca_only_nodes_after", 0)
        lines.append(f"CA-only nodes ({ops}) left: {left}")
        if structure.get("in_blocks_not_rewritten"):
            lines.append(f"  in blocks not rewritten: {structure['in_blocks_not_rewritten']}")
        for module, counts in structure.get("in_unmatched_concats", {}).items():
            listed = ", ".join(f"{k} {v}" for k, v in counts.items())
            lines.append(f"  in {module} (not matched as CA): {listed}")
        for axis, span in structure.get("dynamic_sizes", {}).items():
            step = f", multiples of {span['multiple_of']}" if span["multiple_of"] > 1 else ""
            lines.append(f"dynamic {axis.upper()}: {span['min']} to {span['max']}{step}")
        if "segments" in structure:
            lines.append(f"XNNPACK delegate segments: {structure['segments']}")
            lines += [
                f"  outside: {o['op']} ({o['module'] or '<model>'})" for o in structure["outside"]
            ]
        if "partitions" in structure:
            lines.append(f"XNNPACK partitions: {structure['partitions']}")
            lines += [
                f"  TRANSPOSE left: op {t['index']} ({t['module'] or '<model>'})"
                for t in structure["transposes"]
            ]
            lines += [
                f"  outside: op {o['index']} {o['op']} ({o['module'] or '<model>'})"
                for o in structure["outside"]
            ]
    for check in report.checks.values():
        lines += _check_lines(check, _compressed_figures(check))
        arithmetic = check.details.get("fp32_arithmetic")
        if arithmetic and arithmetic.get("ran"):
            lines.append(
                f"  fp32 arithmetic: {'passed' if arithmetic['passed'] else 'FAILED'}; rel err "
                f"{arithmetic['rel_err']:.3g} (margin {arithmetic['margin']:.3g}), "
                f"{arithmetic['fp16_constants']} fp16 constants, "
                f"{len(arithmetic['constant_mismatches'])} not their fp32 value rounded"
            )
            lines += [f"  failed: {line}" for line in arithmetic["failures"]]
            lines += [f"  failed: {line}" for line in arithmetic["constant_mismatches"]]
        elif arithmetic:
            lines.append(f"  fp32 arithmetic: not run ({arithmetic['reason']})")
    if report.parity is not None and report.parity.ran:
        parity = report.parity.details
        verdict = "FAILED" if parity["failures"] else "passed"
        lines.append(
            f"parity vs PyTorch ({parity['backend']}, {parity['inputs']} inputs): {verdict}; "
            f"margin {parity['max_margin']:.3g} (1 = bound), max abs err "
            f"{parity['max_abs_err']:.3g}, rel err {parity['max_rel_err']:.3g}"
        )
        blocks = parity.get("blocks")
        if blocks:
            verdict = "passed" if blocks["passed"] else "FAILED"
            worst = blocks["max_rel_err"]
            lines.append(f"per-block parity (torch): {verdict}; rel err {worst:.3g}")
        lines += [f"  failed: {line}" for line in parity.get("failures", [])]
        lines += [f"  failed: {line}" for line in (blocks or {}).get("failures", [])]
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


def _compressed_figures(check: Check) -> list[str]:
    """The compressed-weights check's figures (its failures are the check's own lines)."""
    if check.name != "compressed_weights" or not check.ran:
        return []
    details = check.details
    top1 = details["min_top1"]
    return [
        f"{details['format']} in PyTorch vs fp32: rel err {details['max_rel_err']:.3g}, "
        f"min cosine {details['min_cosine']:.6f}"
        + ("" if top1 is None else f", top-1 agreement {top1:.2f}")
        + f"; {details['weights_placed']} weights placed, "
        f"{details['factors_fitted']} fitted, {details['weights_unmatched']} unmatched"
    ]


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
    if report.structure is not None and report.structure.details:
        left = report.structure.details["ca_only_nodes_after"]
        lines.append(f"CA-only nodes (Transpose/Concat/Split/Slice/Shape/Gather) left: {left}")
    if report.dynamic.get("requested"):
        if report.dynamic.get("applied"):
            dyn = report.dynamic
            verdict = "ran" if dyn.get("passed") else "FAILED to run"
            error = f": {dyn['error']}" if dyn.get("error") else ""
            lines.append(f"dynamic H/W: {dyn['dims']}; {verdict} at {dyn.get('ran_at')}{error}")
        else:
            lines.append(f"dynamic H/W not applied: {report.dynamic['reason']}")
    if report.parity is not None and report.parity.ran:
        parity = report.parity.details
        verdict = "passed" if report.parity.verdict is Verdict.PASSED else "FAILED"
        lines.append(
            f"parity OUT vs IN ({parity['backend']}, {parity['inputs']} inputs): {verdict}; "
            f"margin {parity['max_margin']:.3g} (1 = bound), max abs err "
            f"{parity['max_abs_err']:.3g}, rel err {parity['max_rel_err']:.3g}"
        )
        lines += [f"  failed: {line}" for line in parity["failures"]]
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
            first, *outputs = describe(artifact.lossy, LOSSY_REFERENCE)
            lines.append(f"  lossy gate: {first}")
            lines += [f"    {line}" for line in outputs]
            lines += [f"  failed: {line}" for line in artifact.lossy.failures()]
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
