"""Everything derived from the raw result rows: leaderboards, paired comparisons,
summaries, plots and README's table.

Reads only the results store (`slam_bench.store`) and the registries' names; never
the trial loop. `regenerate.regenerate` rewrites all of it from the rows.
"""
