"""The study and script helpers, kept apart from the `hf_dendrites` library.

What `scripts/` and `benchmarks/` need and a user of dendrites does not: the offline task data
(`data`), the user's own data files (`data_files`), the unlabelled distillation pool (`unlabeled`),
teacher logits cached on disk (`teacher`), the shipped pretrained MiniLM names (`pretrained`) and
the study metrics, loaded offline from `metric_modules/` (`metrics`).

The library never imports this package (tests/test_structure.py checks it).
"""
