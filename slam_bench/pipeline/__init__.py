"""The distillation pipeline (docs/method.md sections 1, 3, 4; docs/suites.md).

Split (A, V, U, test) -> train the teacher on A -> cache its outputs on V, U and test -> fit
each method's estimators on V -> train one student per method on A and U -> test accuracy ->
one result row per (trial, method). Entry point: `slam_bench.pipeline.runner.run_suite`.
"""
