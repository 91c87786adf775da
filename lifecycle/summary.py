"""The final summary printed after every invocation: what ran, where it was tracked, what to do next."""

from __future__ import annotations

from lifecycle.runner import LifecycleReport

RULE = "=" * 72


def ui_command(tracking_uri: str, port: int) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port {port}"


def render(report: LifecycleReport, ui_port: int) -> str:
    status = "FAILED" if report.failed else "SUCCESS"
    lines = [RULE, f"lifecycle mode={report.mode}: {status}", RULE]
    for result in report.results:
        mark = "ok " if result.status == "success" else "ERR"
        run = f"  run {result.run_id}" if result.run_id else ""
        lines.append(f"[{mark}] {result.stage:<14} {result.duration_s:6.1f} s{run}")
        lines.extend(f"      {line}" for line in result.lines)
    if report.parent_run_id:
        lines.append(f"parent run: {report.parent_run_id} (experiment {report.experiment_id})")
    if report.tracking_uri:
        lines.append(f"MLflow UI:  {ui_command(report.tracking_uri, ui_port)}")
    if report.error:
        lines.append(f"error: {report.error}")
    lines.append(RULE)
    return "\n".join(lines)
