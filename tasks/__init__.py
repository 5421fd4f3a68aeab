"""The genbound task YAMLs (installed as ``lm_eval_genbound.tasks``; ``--include_path tasks/``)."""
