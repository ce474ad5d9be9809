"""A generative world with drift scenarios and late labels, for the demo, tests and benchmarks.

`simulator.world.World` draws a day's feature rows and their labels from a known ground truth;
`simulator.land.simulate` lands a date range of them in the lake's `features/` and `labels/`.
"""
