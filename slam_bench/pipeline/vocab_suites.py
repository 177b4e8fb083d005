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
top-K loss (chunks of `fused_chunk_rows` rows of logits). Methods: the teacher row, vanilla,
slam and the A + V reference vanilla_av (V's true labels added to the student's labeled set,
as in known_noise), so every cell has the protocol's label-budget reference.

The regime is a language model's, not the 30 epochs of the other embedded suites: one pass
over a large pool (|U| = 29,300 and 29,100 of a 30,000-example training split). At 32,768 Zipf
classes a student learns a class only from the examples of it that it sees, so data, not
epochs, is what it lacks: in a probe at teacher accuracy 0.8, 30 epochs of a 2,000-example split
gave vanilla 34%, one pass over 30,000 examples (1.4 times the time) 51% (docs/vocab.md). The
pass uses batches of 128 and Adam at 3e-2 decayed to zero (the same for every method): in
one-trial probes at |A| = 400 (batch 64), 3e-2 gave vanilla 51.2% and slam 39.2% where 1e-2
gave 46.2% and 32.6%.
slam_normalized needs k >= 2, which a top-1 cache cannot give (refused there), weighted is
left out for the budget, and the other baselines need the dense teacher. The dense cache runs
in the smoke variant only: at full size its rows on U, V and test would be 31,600-31,800 x
32,768 floats, 4.1-4.2 GB.
"""
from __future__ import annotations

from slam_bench.pipeline.suites import (_NO_TEACHER_TRAINING, FULL_TRIALS, SMOKE_TRIALS, ModelSpec,
                                        Sizes, Suite, TrainSpec, register_suite)

VOCAB_METHODS = ("teacher", "vanilla", "vanilla_av", "slam")
# The full variant's size; its measured cost is in docs/vocab.md ("Cost").
_FULL_DATA = {"num_classes": 32768, "n_train": 30000, "n_test": 2000}
_SMOKE_DATA = {"num_classes": 2048, "n_train": 3000, "n_test": 1000}
_STUDENT = TrainSpec(epochs=1, batch_size=128, lr=3e-2)

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
    keep_freed_memory=True,  # its 4 MB logits chunks and gradients: see Suite
    description="known answer at a vocabulary's scale: 32,768 Zipf classes, a teacher that "
                "follows SLaM's noise model, top-K teacher caches K = 1, 5, 20; linear student "
                "trained through the fused top-K loss"))
