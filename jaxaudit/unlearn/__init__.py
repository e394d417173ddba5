"""Unlearning methods: a registry of factories returning pure functions.

``get_method(name, **hparams).fn(params, model, data, key) -> params``; see
:mod:`jaxaudit.unlearn.base` for the contract, :mod:`jaxaudit.train.loop`
for the shared jitted training loop and one module per family for the
methods. Importing this package registers every method (and the
curvature-based ones of :mod:`jaxaudit.unlearn.curvature_methods` when that
module is present).

=================  ==============================================================
family             methods (module)
=================  ==============================================================
retraining         retrain, sisa, warmstart_retrain, warmstart_finetune (retraining)
fine-tuning        finetune, cf_k, eu_k, l1_sparse (finetuning)
relabelling        random_label, relabel_finetune, srl, salun (relabelling)
de-optimisation    gradient_ascent, ga_finetune, neggrad_plus (deoptimisation)
distillation       bad_teacher, scrub (distillation)
challenge          msg, ct, fcs, cfw, prmq, kde, rni (challenge)
language-model     lm_gradient_ascent, lm_grad_diff, lm_npo, lm_simnpo, lm_idk,
                   lm_rmu, lm_finetune, lm_retrain (language; token targets only)
=================  ==============================================================
"""

from __future__ import annotations

import importlib
import importlib.util

from jaxaudit.unlearn.base import (EmptySetError, MethodInfo, UnlearnData, UnlearnMethod,
                                   Unlearner, check_data, coerce_hparams, get_method,
                                   list_methods, make_unlearn_data, method_names, register,
                                   run_method, seed_keys)
from jaxaudit.train.loop import Batch, FitResult, StepInfo, fit, make_spec, mean_gradient
from jaxaudit.unlearn import challenge as _challenge  # noqa: F401  (registers methods)
from jaxaudit.unlearn import deoptimisation as _deoptimisation  # noqa: F401
from jaxaudit.unlearn import distillation as _distillation  # noqa: F401
from jaxaudit.unlearn import finetuning as _finetuning  # noqa: F401
from jaxaudit.unlearn import language as _language  # noqa: F401
from jaxaudit.unlearn import relabelling as _relabelling  # noqa: F401
from jaxaudit.unlearn import retraining as _retraining  # noqa: F401
from jaxaudit.unlearn.challenge import msg_reinit_mask, prune_reinit
from jaxaudit.unlearn.objectives import random_wrong_labels
from jaxaudit.unlearn.paramtree import transpose_conv_kernels
from jaxaudit.unlearn.relabelling import relabel_targets, saliency_mask

if importlib.util.find_spec('jaxaudit.unlearn.curvature_methods') is not None:
  importlib.import_module('jaxaudit.unlearn.curvature_methods')

__all__ = ['UnlearnData', 'UnlearnMethod', 'Unlearner', 'MethodInfo', 'EmptySetError',
           'make_unlearn_data', 'check_data', 'register', 'get_method', 'list_methods',
           'method_names', 'coerce_hparams', 'run_method', 'seed_keys', 'fit', 'make_spec',
           'mean_gradient', 'Batch', 'StepInfo', 'FitResult', 'transpose_conv_kernels',
           'msg_reinit_mask', 'prune_reinit', 'saliency_mask', 'relabel_targets',
           'random_wrong_labels']
