"""SAE training on language-model activations (`pivotal-sae train-sae`, `sae-info`).

`config` (the commands' dataclasses), `job` (the training loop, the default SAEs trained on
first use), `topk_trainer` (SAELens's trainer, sparse decode), `hierarchical_trainer`,
`defaults` (where the default SAEs live; looking them up never trains), `info` (`sae-info`).
"""
