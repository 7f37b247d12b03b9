"""SAE architectures and their SAELens-format directories.

Language-model side (inference): `sae.Sae` (JumpReLU, TopK, Standard, as SAELens computes them),
`hierarchical_lm.HierarchicalLmSae`, and `SaeLensBacked` for the rest; `loading` reads and writes
directories. Toy lab (trainable): `topk.TopKSae`, `hierarchical.HierarchicalSae`,
`matryoshka.MatryoshkaSae`, saved and read through `toy_io`. Training lives in
`pivotal_sae.training`; nothing here imports a model.
"""
