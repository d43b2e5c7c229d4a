"""The export pipeline behind `csideploy export`: config, steps, artifacts, writing.

    from csideploy.pipeline.config import ExportConfig
    from csideploy.pipeline.run import run_export
    result = run_export(ExportConfig(model="clnet", int8="static"))

`config` (ExportConfig) and `results` (the typed step results) are leaves; `steps` (load,
data, surgery, split, reference), `artifacts` (each format's files, gated; latency), `write`
(numerics.json, report, bundle) and `run` (`run_export`) build on them. Formats register in
`format_steps`. The package imports nothing, so that importing one module stays cheap.
"""
