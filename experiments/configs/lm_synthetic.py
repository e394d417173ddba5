"""A language model on the TOFU-style synthetic people (jaxaudit.text.corpus).

  jaxaudit train --config=experiments/configs/lm_synthetic.py:local --workdir=runs/lm
  jaxaudit unlearn --workdir=runs/lm --method=lm_npo
  jaxaudit audit --workdir=runs/lm --target=unlearned/lm_npo
  jaxaudit audit --workdir=runs/lm --token_logprobs=my_lm.npz    # your own LM's log-probs

`local`: 200 people, a 2-layer width-64 transformer (0.18M parameters), about two minutes
on 2 CPU cores; `tiny`: a smoke-test size; `full`: 2000 people and an 8-layer width-512
model for an accelerator. `text:shakespeare` (speeches, BPE) works the same way with
`--config.dataset=text:shakespeare --config.text.tokenizer=bpe --config.text.unit=document`.
"""

from jaxaudit.configs import base_config


def get_config(arg: str = 'local'):
  c = base_config()
  c.dataset = 'text:synthetic'
  c.model = 'transformer'
  c.model_kwargs.width = 64
  c.model_kwargs.depth = 2
  c.model_kwargs.heads = 4
  c.train.optimizer = 'adam'
  c.train.learning_rate = 2e-3
  c.train.epochs = 15
  c.train.batch_size = 32
  c.split.ref_fraction = 0.2
  c.text.forget_groups = 20
  c.audit.member_sample = 500
  c.audit.test_sample = 500
  c.audit.utility_ratio = 0.5     # the utility test against models on half of Dr
  c.unlearn.methods = 'lm_retrain,lm_finetune,lm_gradient_ascent,lm_npo'
  if arg == 'tiny':
    c.text.num_people = 40
    c.text.context = 48
    c.text.forget_groups = 4
    c.text.base_epochs = 3
    c.model_kwargs.width = 32
    c.model_kwargs.depth = 1
    c.model_kwargs.heads = 2
    c.train.epochs = 3
    c.audit.num_verifiers = 2
  elif arg == 'full':
    c.text.num_people = 1600
    c.text.context = 128
    c.text.forget_groups = 160
    c.text.base_epochs = 40
    c.text.base_lr = 1e-3
    c.model_kwargs.width = 512
    c.model_kwargs.depth = 8
    c.model_kwargs.heads = 8
    c.train.learning_rate = 3e-4
    c.train.epochs = 10
    c.train.batch_size = 64
  return c
