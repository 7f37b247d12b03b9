"""The absorption search on language-model SAEs (SPEC §2): co-occurrence, top examples, pairs,
explanations, results files and the report. These pieces take tensors, not models; the jobs
that run a model and feed them live beside them.

Modules: `cooccurrence` (exact counts, packed or sparse), `examples` (top activating contexts),
`pairs` (effect and decoder-similarity pairs), `explanations` (Neuronpedia exports),
`results` (the three results files and `load_results`) on `results_files` (the generic
container), `pair_records` (pairs.json's typed records), `report` (JSON, CSV, histogram,
HTML drawn with `pivotal_sae.render`).
"""
