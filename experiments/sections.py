"""The one boundary between config sections and prefalign's frozen dataclasses.

A config section that configures a dataclass (``ModelConfig``,
``RankingConfig``, ``SamplingConfig``, ``TrainConfig``, ``AlignConfig``, ...)
is made from it with ``section`` and turned back into it with ``build``, so
each default is written once (in the dataclass; a config writes only where
its job differs) and every key is checked in one place::

  config.collect.ranking = sections.section(ranking.RankingConfig())
  config.collect.ranking.sinkhorn.epsilon = 0.05   # or --config.collect...
  rc = sections.build(ranking.RankingConfig, config.collect.ranking,
                      'config.collect.ranking')

Nested dataclasses become nested sections, tuples stay tuples and an
``X | None`` field with value ``None`` is a placeholder of type ``X`` (so
``--config...=64`` parses). Errors name the config key: a key that is not a
field, a value of the wrong kind, and the dataclass's own checks
(``config.align.objective: PreferenceConfig.alpha must be > 0, got 0``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import dataclasses
import typing
from typing import Any

import ml_collections
from ml_collections import config_dict

__all__ = ['section', 'build', 'merged']


def section(default: Any, exclude: Iterable[str] = ()
            ) -> ml_collections.ConfigDict:
  """A config section mirroring the fields of a dataclass instance.

  Args:
    default: a dataclass instance; its values are the section's defaults.
    exclude: fields left out (filled in by the stage at run time, e.g. file
      lists or the model); ``'optimizer.total_steps'`` names a nested one.

  Returns:
    A ConfigDict with one key per field (nested dataclasses as sections).
  """
  if not dataclasses.is_dataclass(default) or isinstance(default, type):
    raise TypeError(f'section() takes a dataclass instance, got {default!r}')
  exclude = set(exclude)
  out = ml_collections.ConfigDict()
  for f in dataclasses.fields(default):
    if f.name in exclude:
      continue
    value = getattr(default, f.name)
    if dataclasses.is_dataclass(value):
      nested = {e.split('.', 1)[1] for e in exclude
                if e.startswith(f.name + '.')}
      out[f.name] = section(value, nested)
    elif value is None:
      hint = typing.get_type_hints(type(default))[f.name]
      out[f.name] = config_dict.placeholder(_optional_type(hint))
    else:
      out[f.name] = value
  return out


def build(cls: type, values: Mapping[str, Any] | ml_collections.ConfigDict,
          key: str, *, ignore: Iterable[str] = (), **fields: Any) -> Any:
  """The dataclass ``cls`` of a config section.

  Args:
    cls: the frozen dataclass.
    values: its section (or a mapping); nested sections build nested
      dataclasses.
    key: the section's name in errors, e.g. ``'config.collect.ranking'``.
    ignore: keys of the section that are the stage's own, not fields.
    **fields: fields set by the caller (run-time values); they win over the
      section's keys of the same name.

  Returns:
    ``cls(**fields_of_section, **fields)``.

  Raises:
    ValueError: naming ``key`` for an unknown key, a value of the wrong
      kind, or a value the dataclass refuses.
  """
  kinds = {f.name: _kind(f) for f in dataclasses.fields(cls)}
  names = set(kinds)
  ignore = set(ignore)
  items = dict(values.items()) if values is not None else {}
  unknown = sorted(set(items) - names - ignore)
  if unknown:
    raise ValueError(f'{key}: unknown key(s) {unknown}; {cls.__name__} has '
                     f'{sorted(names)}')
  kwargs = {}
  for name, value in items.items():
    if name in ignore or name in fields:
      continue
    kind = kinds[name]
    if dataclasses.is_dataclass(kind):
      value = build(kind, value, f'{key}.{name}')
    elif kind is tuple:
      if not isinstance(value, (tuple, list)):
        raise ValueError(f'{key}.{name}={value!r}: expected a tuple, e.g. '
                         "--config.<section>.<key>='(1, 2)'")
      value = tuple(value)
    kwargs[name] = value
  kwargs.update(fields)
  try:
    return cls(**kwargs)
  except (ValueError, TypeError) as e:
    raise ValueError(f'{key}: {e}') from None


def merged(base: ml_collections.ConfigDict, overrides: Mapping[str, Any],
           key: str) -> ml_collections.ConfigDict:
  """A copy of ``base`` with ``overrides`` (nested mappings) applied.

  Raises:
    ValueError: naming ``key`` for an override that ``base`` has no key for.
  """
  out = ml_collections.ConfigDict(base.to_dict())
  _merge(out, overrides, key)
  return out


def _merge(target: ml_collections.ConfigDict, overrides, key: str) -> None:
  for name, value in overrides.items():
    if name not in target:
      raise ValueError(f'{key}.{name}: no such key (known: '
                       f'{sorted(target.keys())})')
    if isinstance(target[name], ml_collections.ConfigDict):
      if not isinstance(value, (Mapping, ml_collections.ConfigDict)):
        raise ValueError(f'{key}.{name}={value!r}: expected a section')
      _merge(target[name], value, f'{key}.{name}')
    else:
      target[name] = value


def _optional_type(hint) -> type:
  """X of ``X | None``."""
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if len(args) != 1 or not isinstance(args[0], type):
    raise TypeError(f'a None default needs an X | None field, got {hint}')
  return args[0]


def _kind(field: dataclasses.Field):
  """A field's dataclass type, ``tuple``, or None (a plain value), from its
  default (annotations may name types only imported for type checking)."""
  default = field.default
  if dataclasses.is_dataclass(default):
    return type(default)
  if isinstance(default, tuple) or (
      default is dataclasses.MISSING and 'tuple' in str(field.type)):
    return tuple
  return None

