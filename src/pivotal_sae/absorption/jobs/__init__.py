"""The absorption search's jobs: each loads a model and SAEs, runs its loop with checkpoints,
and writes results files into a run directory.

`cooccur` (co-occurrence counts and top examples), `ablate` (selective ablation effects),
`pairs` (pair search and report) and `absorb` (all three in one directory). `setup` holds what
they share (resume, loading, checks before writing); `checkpoints` the atomic checkpoint sets.
"""
