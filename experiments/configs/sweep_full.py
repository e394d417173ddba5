"""The full study sweep, meant for an accelerator (hours): digits, MNIST, CIFAR-10.

Entries: digits (MLP, CNN), MNIST (MLP, CNN; all 51k records), CIFAR-10
(ResNet-18, ../shared/data/cifar10_jpeg.npz); forget settings random 10 / 20 /
30% of D and the whole class 3; seeds 0-4; every method of the local sweep
plus CT, CF-k, EU-k, SRL, the remaining challenge methods (FCS, CFW, PRMQ, KDE,
RNI) and fisher_hessian; LiRA with 16 shadows, RMIA with 4 reference models,
the NeurIPS-23 score with 5 + 5 models and U-LiRA for every method.

  python experiments/sweep.py --config=experiments/configs/sweep_full.py:full \
      --workdir=runs/sweep_full
  jaxaudit report --results=runs/sweep_full/results.jsonl --out=runs/sweep_full/report

Args: ``full`` (everything) or one of ``digits``, ``mnist``, ``cifar10``.
"""


import ml_collections

from jaxaudit.configs import load_config_module

MLP_METHODS = ('original,retrain,finetune,cf_k,eu_k,l1_sparse,gradient_ascent,'
               'gradient_ascent_early,ga_finetune,neggrad_plus,random_label,relabel_finetune,'
               'srl,salun,bad_teacher,scrub,msg,fcs,cfw,prmq,kde,rni,fisher,fisher_hessian,'
               'influence,newton,ssd')
CONV_METHODS = MLP_METHODS + ',ct'


def _local():
  return load_config_module('sweep_local', __file__)


def get_config(arg: str = 'full'):
  local = _local()
  c = local.get_config('local')
  c.methods = MLP_METHODS
  c.forget_settings = 'random10,random20,random30,class3'
  c.seeds = '0,1,2,3,4'
  c.peers.lira_shadows = 16
  c.peers.rmia_refs = 4
  c.peers.neurips23_models = 5
  c.peers.neurips23_methods = 'all'
  c.peers.ulira_methods = 'all'
  c.entries = ml_collections.ConfigDict()
  digits_mlp = local.load_base('digits_mlp', 'full')
  digits_mlp.model_kwargs.hidden = (512, 512)
  digits_mlp.split.ref_fraction = 0.3
  digits_mlp.audit.num_verifiers = 8
  digits_cnn = local.load_base('digits_cnn', 'full')
  digits_cnn.split.ref_fraction = 0.3
  digits_cnn.audit.num_verifiers = 8
  ga_digits = ml_collections.ConfigDict({'gradient_ascent_early': {'lr': 0.5}})
  ga_mnist = ml_collections.ConfigDict({'gradient_ascent_early': {'epochs': 3, 'lr': 0.01}})
  c.entries.digits_mlp = ml_collections.ConfigDict(dict(
      config=digits_mlp, methods='', forget_settings='', method_hparams=ga_digits))
  c.entries.digits_cnn = ml_collections.ConfigDict(dict(
      config=digits_cnn, methods=CONV_METHODS, forget_settings='', method_hparams=ga_digits))
  c.entries.mnist_mlp = ml_collections.ConfigDict(dict(
      config=local.load_base('mnist_mlp', 'full'), methods='', forget_settings='',
      method_hparams=ga_mnist))
  c.entries.mnist_cnn = ml_collections.ConfigDict(dict(
      config=local.load_base('mnist_cnn', 'full'), methods=CONV_METHODS, forget_settings='',
      method_hparams=ga_mnist))
  c.entries.cifar10_resnet = ml_collections.ConfigDict(dict(
      config=local.load_base('cifar10_resnet', 'full'), methods=CONV_METHODS,
      forget_settings=''))
  c.datasets = {'full': 'digits_mlp,digits_cnn,mnist_mlp,mnist_cnn,cifar10_resnet',
                'digits': 'digits_mlp,digits_cnn', 'mnist': 'mnist_mlp,mnist_cnn',
                'cifar10': 'cifar10_resnet'}.get(arg)
  if c.datasets is None:
    raise ValueError(f'unknown sweep_full variant {arg!r}: full, digits, mnist or cifar10')
  c.fake.seeds = '0,1,2,3,4,5,6,7,8,9'
  return c
