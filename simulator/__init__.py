"""A generative world with drift scenarios and late labels, for the demo, tests and benchmarks.

`simulator.world.World` draws a day's feature rows and their labels from a known ground truth
(binary or regression, by the spec's task); `simulator.land.simulate` lands a date range of
them in the lake's `features/` and `labels/`; `simulator.export` writes flat CSV/Parquet files
(the world's, or a table of another shape) for `nightshift import` to read.
"""
