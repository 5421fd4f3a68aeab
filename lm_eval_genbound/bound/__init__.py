"""The bound mathematics, pure numpy (no torch, no lm_eval).

    >>> from lm_eval_genbound.bound.complexity import Complexity
    >>> from lm_eval_genbound.bound.report import bound_report
    >>> rep = bound_report(stats, Complexity(16.0 * n_params, method="param16"))   # doctest: +SKIP

Modules, each with one job: ``validate`` (checks of δ, α, per-token arrays), ``freedman`` (the
empirical Freedman inequality, its λ grid, C), ``complexity`` (what is charged for h: message,
prefix-free and configuration bits), ``terms`` (the final smoothed bound and its decomposition, the
choice of α), ``baselines`` (Azuma token-level, document-level Hoeffding), ``design`` (how the scored
tokens were chosen), ``subsample`` (the subsampling correction of a uniform sample), ``vacuity`` (the
verdict and D*), ``stats`` (the streamed sufficient statistics: accumulate, merge, save), ``report``
(every bound from statistics: ``bound_report``, ``stats_bound``, ``summary_rows``, with bits per byte).
"""
