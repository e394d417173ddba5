"""Curvature of a classifier's loss: Hessian/GGN products, Fisher diagonals, solvers
(matrix-free, and dense ones that stay safe under ``vmap`` on CPU).

Building blocks of the Fisher- and Hessian-based unlearning methods (Fisher
forgetting, influence/Newton removal, certified removal, SSD). Models are pure
``apply_fn(params, x (B, ...)) -> logits (B, C)``; parameters are arbitrary
pytrees and every vector is a pytree shaped like them. Every function is
traceable (wrap it in ``jax.jit``) and validates its arguments eagerly,
raising :class:`jaxaudit.errors.ConfigError`.
"""

from __future__ import annotations

from jaxaudit.curvature.dense import solve
from jaxaudit.curvature.dense import spd_solve
from jaxaudit.curvature.fisher import diag_fisher
from jaxaudit.curvature.fisher import mean_squared_grads
from jaxaudit.curvature.fisher import per_example_grads
from jaxaudit.curvature.hvp import ggn_vector_product
from jaxaudit.curvature.hvp import hessian_matrix
from jaxaudit.curvature.hvp import hvp
from jaxaudit.curvature.hvp import make_dataset_hvp
from jaxaudit.curvature.hvp import make_hvp
from jaxaudit.curvature.solvers import CGInfo
from jaxaudit.curvature.solvers import conjugate_gradient
from jaxaudit.curvature.solvers import lissa
from jaxaudit.curvature.solvers import power_iteration

__all__ = [
    'CGInfo',
    'conjugate_gradient',
    'diag_fisher',
    'ggn_vector_product',
    'hessian_matrix',
    'hvp',
    'lissa',
    'make_dataset_hvp',
    'make_hvp',
    'mean_squared_grads',
    'per_example_grads',
    'power_iteration',
    'solve',
    'spd_solve',
]
