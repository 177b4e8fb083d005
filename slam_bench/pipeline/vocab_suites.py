"""`vocab_known_noise`: SLaM at a vocabulary's scale (docs/vocab.md), a suite like the others.

The dataset (slam_bench.data.vocab_known_noise) has C = 32,768 Zipf-frequent classes in the full
variant (2,048 in the smoke run) and a teacher that follows SLaM's noise model, drawn as top-K
rows without the dense N x C ones. Every trial runs its methods on each teacher cache of
`teacher_topk`: K = 1 (the teacher's label and its confidence only), K = 5 (part of the
8-class candidate set), K = 20 (the candidate set and the largest tail entries), and in the
smoke run the dense rows too (at 32,768 classes the generator's dense rows of the training and
test splits would be 4,000 x 32,768 floats, 0.52 GB, and a fourth cache would not fit the
budget). Each K is its own cell (`<dataset>_<|A|>_top<K>`), on the same splits, teachers and
seeds; the rows log each cache's bytes and a student step's peak memory.

Two teacher accuracies, one per labeled size as in halfspace_rcn (the stand-in for the better
teacher more labels would train): 0.6 at |A| = 200 and 0.8 at |A| = 400. The student is
linear (the Bayes rule of the task is linear in x), its output layer trained through the fused
top-K loss (chunks of `fused_chunk_rows` rows of logits) for 30 epochs of the pool A + U (the
regime of every embedded suite: long enough to fit U). Methods: the teacher row, vanilla and
slam. The 30-minute budget of the full variant on one core holds two students per cache at
C = 32,768 (each pass over a row touches all 32,768 classes), so vanilla_av and weighted, which
run on top-K caches too, are left out, and the training split is 2,000 examples (|U| = 1,300
and 1,100). slam_normalized needs k >= 2, which a top-1 cache cannot give (refused there), and
the other baselines need the dense teacher.
"""
from __future__ import annotations

from slam_bench.pipeline.suites import (_NO_TEACHER_TRAINING, FULL_TRIALS, SMOKE_TRIALS, ModelSpec,
                                        Sizes, Suite, TrainSpec, register_suite)

VOCAB_METHODS = ("teacher", "vanilla", "slam")
# The full variant's size: one trial (|A| = 400, three caches, two students) took 75 s on one
# torch thread of the project's 2-core machine under a load of 3, so 20 trials take about 25
# minutes, within the 30 a full variant may take (docs/vocab.md, "Cost").
_FULL_DATA = {"num_classes": 32768, "n_train": 2000, "n_test": 2000}
_SMOKE_DATA = {"num_classes": 2048, "n_train": 3000, "n_test": 1000}
_STUDENT = TrainSpec(epochs=30, batch_size=256, lr=1e-2)

register_suite(Suite(
    name="vocab_known_noise", dataset="vocab_known_noise",
    teacher_model=ModelSpec("noise_model"),
    student_model=ModelSpec("linear"),
    full=Sizes(labeled_sizes=(200, 400), trials=FULL_TRIALS, n_val=500,
               teacher=_NO_TEACHER_TRAINING, student=_STUDENT,
               teacher_accuracy=(0.6, 0.8), teacher_topk=(1, 5, 20),
               dataset_options=_FULL_DATA),
    smoke=Sizes(labeled_sizes=(300,), trials=SMOKE_TRIALS, n_val=200,
                teacher=_NO_TEACHER_TRAINING, student=TrainSpec(epochs=2, batch_size=256, lr=1e-2),
                max_unlabeled=1000, teacher_accuracy=(0.7,), teacher_topk=(1, 5, None),
                dataset_options=_SMOKE_DATA),
    methods=VOCAB_METHODS,
    description="known answer at a vocabulary's scale: 32,768 Zipf classes, a teacher that "
                "follows SLaM's noise model, top-K teacher caches K = 1, 5, 20; linear student "
                "trained through the fused top-K loss"))
