"""Reports of artifact directories: report.md (a block beside the export's text), report.html
with embedded plots, and the latency section `csideploy bench` keeps up to date.

Modules: `load` (typed rows from numerics.json, manifest.json, perf.json), `tables` (cells and
rounding), `choose` (which file to ship), `plots`, `page` (HTML), `markdown` (report.md's
block), `render` (the orchestration).
"""

from csideploy.report.load import load_run
from csideploy.report.markdown import replace_block, write_latency_section
from csideploy.report.render import ReportFiles, render_report

__all__ = ["ReportFiles", "load_run", "render_report", "replace_block", "write_latency_section"]
