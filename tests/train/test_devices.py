"""The one place that chooses how the model axis is laid out."""

import pytest

from jaxaudit.errors import ConfigError
from jaxaudit.train import devices


def test_default_follows_the_backend():
  assert devices.default_strategy(backend='cpu') == 'map'
  assert devices.default_strategy(backend='gpu') == 'vmap'
  assert devices.default_strategy(backend='tpu') == 'vmap'


def test_resolve_strategy():
  assert devices.resolve_strategy('vmap') == 'vmap'
  assert devices.resolve_strategy('map') == 'map'
  assert devices.resolve_strategy('auto') == devices.default_strategy()
  assert devices.resolve_strategy('auto', vmappable=False) == 'map'
  with pytest.raises(ConfigError, match='sisa.strategy must be one of'):
    devices.resolve_strategy('pmap', what='sisa.strategy')
