"""`csideploy sweep`: export (and bench) every cell of a grid of models, CRs, formats, INT8
modes and targets, as shards on Ray or in this process, then one comparison report.

`grid` names the cells and keeps out those without trained weights, `cell` runs one cell
(the same library calls as `csideploy export` and `csideploy bench`), `run` drives them all.
"""
