"""Estimator defaults that the method registry needs too, in a module that imports nothing.

`slam_bench.estimators` (torch, scikit-learn) takes them as its functions' defaults, and
`slam_bench.pipeline.methods` as the hyper-parameter defaults it registers, which
`slam-bench list` prints without importing torch.
"""

# Forward correction's smoothing: pseudo-examples added to each row of the confusion counts,
# spread like the symmetric-noise matrix of the teacher's own accuracy on V (diagonal acc_V,
# (1 - acc_V) / (C - 1) elsewhere). Shrinking toward that matrix, not toward the uniform, keeps
# the diagonal at the teacher's accuracy for any amount of smoothing (a +1 in every cell of a
# 10-class matrix with 20 examples per row pulls a 0.87 diagonal down to 0.61); one
# pseudo-example per row is light next to |V| / C >= 20 real ones and fills a class V lacks.
TRANSITION_SMOOTHING = 1.0
TRANSITION_PRIOR = "symmetric_val_accuracy"
