"""The fake-robustness protocol of issue 17: development, then confirmation chosen before looking.

Settings (entries of the sweep config, MLP 256-256, 20 epochs, every fake's
owner with K verifiers of its own):
  mnist_mlp_large  MNIST, |D| = 4000, |Du| = 1200 (random30), K = 8, D_ref sample 5000;
  mnist_mlp_10k    MNIST, |D| = 10,000, |Du| = 500 (random5), K = 4, D_ref sample 5000;
  cifar10_mlp      CIFAR-10 (../shared/data/cifar10_jpeg.npz), as mnist_mlp_large — the
                   second data set (the small CNN is 8x the FLOPs of the MLP per record:
                   ten draws of twenty fakes did not fit two CPU cores, BUILD_NOTES.md);
  digits_mlp       embedded digits, MLP 512-512, random30, K = 8 (development only).

Stages (PHASE/ENTRY/FORGET/SEEDS/FAKES, see jaxaudit.study.robustness):
  development:  MNIST 4000/K 8 seeds 0-9 and digits seeds 0-9, every fake;
  confirmation: seeds 100-109 of both MNIST settings and of CIFAR-10, every fake, and
                more draws of the honest retrain and M: seeds 110-149 of MNIST
                4000/K 8 (50 draws in all) and 110-129 of MNIST 10k/K 4 (30 draws;
                the 2-core budget of the session).

Peers are off (the fake study's peer columns are docs/STUDY.md's); `tiny` is the test's.

  python experiments/robustness.py --config=experiments/configs/robustness.py \
      --workdir=runs/robustness
"""


import ml_collections

from jaxaudit.configs import load_config_module


def _sweep_local():
  return load_config_module('sweep_local', __file__)


def get_config(arg: str = 'local'):
  sl = _sweep_local()
  c = sl.get_config('tiny' if arg == 'tiny' else 'local')
  c.peers.lira_shadows = 0
  c.peers.rmia_refs = 0
  c.peers.neurips23_models = 0
  c.fake.peers = False
  m10 = sl.mnist_mlp()
  m10.split.train_size = 10_000
  m10.split.ref_fraction = 0.1
  m10.audit.num_verifiers = 4
  m10.audit.ref_sample = 5000
  c.entries.mnist_mlp_10k = ml_collections.ConfigDict(dict(config=m10, methods='',
                                                           forget_settings='random5'))
  cif = sl.mnist_mlp_large()
  cif.dataset = 'cifar10'
  cif.npz = '../shared/data/cifar10_jpeg.npz'
  cif.split.ref_fraction = 0.12        # 6,000 of the 50,000-record pool
  # An MLP query of a CIFAR record costs 4x an MNIST one: 2,000 reference and 500 member
  # records keep ten draws of twenty fakes within the 2-core budget (set before any
  # CIFAR-10 result was read).
  cif.audit.ref_sample = 2000
  cif.audit.member_sample = 500
  c.entries.cifar10_mlp = ml_collections.ConfigDict(dict(config=cif, methods='',
                                                         forget_settings='random30'))
  c.protocol = ml_collections.ConfigDict()
  c.protocol.family = 'all'            # used only when no development stage runs
  # Fakes compared with the honest retrain model by model (the two that no family caught
  # on the development rows): KL(retrain ‖ fake) on Du against M's on unseen records.
  c.protocol.distance_fakes = 'adaptive_kl_aug,adaptive_full_ce'
  if arg == 'tiny':
    c.protocol.stages = ('development/digits_mlp/random30/0/honest_retrain+noop+adaptive_kl;'
                         'confirmation/digits_mlp/random30/100/honest_retrain+adaptive_correct')
    c.fake.match_epochs = 2
    c.protocol.distance_fakes = 'adaptive_correct'
    return c
  if arg != 'local':
    raise ValueError(f'unknown robustness variant {arg!r}: local or tiny')
  c.protocol.stages = ';'.join([
      'development/mnist_mlp_large/random30/0-9/all',
      'development/digits_mlp/random30/0-9/all',
      'confirmation/mnist_mlp_large/random30/100-109/all',
      'confirmation/mnist_mlp_10k/random5/100-109/all',
      'confirmation/cifar10_mlp/random30/100-109/all',
      'confirmation/mnist_mlp_large/random30/110-149/control',
      'confirmation/mnist_mlp_10k/random5/110-129/control',
  ])
  return c
