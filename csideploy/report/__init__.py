"""Reports of artifact directories: report.md (a block beside the export's text), report.html
with embedded plots, and the latency section `csideploy bench` keeps up to date."""

from csideploy.report.render import (
    ReportFiles,
    load_run,
    render_report,
    replace_block,
    write_latency_section,
)

__all__ = ["ReportFiles", "load_run", "render_report", "replace_block", "write_latency_section"]
