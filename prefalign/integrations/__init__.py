"""Bridges to other simulators; each submodule is imported on its own.

``prefalign.integrations.waymax`` runs the model, the sampler and the
actor inside Waymax (an optional dependency: importing this package does not
import it).
"""

__all__ = ['waymax']


def __getattr__(name):
  # ``prefalign.integrations.waymax`` on attribute access, so that the
  # package itself never imports Waymax (nor TensorFlow).
  if name == 'waymax':
    import importlib
    return importlib.import_module('prefalign.integrations.waymax')
  raise AttributeError(name)
