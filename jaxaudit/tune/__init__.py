"""Hyper-parameter search for unlearning methods (DeepUnlearn's protocol).

* :mod:`~jaxaudit.tune.spaces`: the search space of each method's hyper-parameters;
* :mod:`~jaxaudit.tune.objective`: closeness of Mu to the retrained model (accuracies on Dr,
  Du and a validation split, population-MIA indiscernibility), never our audit's verdict;
* :mod:`~jaxaudit.tune.search`: the Optuna study per method, stored and resumable in the
  workdir, and the chosen settings that ``unlearn``, the sweep and the demo read back.
"""

from jaxaudit.tune.search import TUNE_DIR, read_result, run_tuning, tuned_hparams

__all__ = ["TUNE_DIR", "read_result", "run_tuning", "tuned_hparams"]
