"""The one training loop, ensemble training and batched evaluation."""

from jaxaudit.train.devices import default_strategy
from jaxaudit.train.ensemble import (TrainResult, as_keys, member_keys, stack, stack_subsets,
                                     train_ensemble, train_model, unstack)
from jaxaudit.train.evaluate import accuracy, predict_logits
from jaxaudit.train.loop import (Batch, FitResult, MeanLoss, SoftmaxCE, StepInfo, TokenCE,
                                 augment_images, epoch_batches, fit, make_spec, mean_gradient,
                                 train_step)
from jaxaudit.train.losses import masked_ce, masked_mean, per_example_ce
from jaxaudit.train.recipe import Recipe, make_optimizer

__all__ = ['Recipe', 'make_optimizer', 'TrainResult', 'train_ensemble', 'train_model',
           'epoch_batches', 'augment_images', 'member_keys', 'stack', 'unstack', 'stack_subsets',
           'default_strategy', 'as_keys', 'predict_logits', 'accuracy', 'masked_ce',
           'masked_mean', 'per_example_ce', 'train_step', 'fit', 'FitResult', 'make_spec',
           'mean_gradient', 'Batch', 'StepInfo', 'MeanLoss', 'SoftmaxCE', 'TokenCE']
