"""FLOPs of a jitted function, counted on its jaxpr with loops unrolled.

XLA's ``compiled.cost_analysis()`` counts the body of a ``while`` loop once,
whatever its trip count: a ``lax.scan`` over the sampler's 16 token steps
or the Sinkhorn iterations would be undercounted 16x or more. This walks
the jaxpr instead and multiplies a ``scan`` body by its length and a
``while`` body by ``while_trips`` (a measured count; 1 gives a lower bound)
and takes the cheapest branch of a ``cond`` (a fallback branch, such as an
exhaustive search taken only when a pruned one cannot certify its answer,
would otherwise dominate the count): the counts are lower bounds.

Counted: matrix products (``dot_general``: 2 x batch x M x N x K, the
convention of model FLOP utilisation, backward included when the jaxpr
holds it) and element-wise arithmetic and reductions (one per output or
input element; transcendental functions separately).
"""

from __future__ import annotations

import math
from typing import Any

import jax

_ELEMENTWISE = frozenset((
    'add', 'sub', 'mul', 'div', 'neg', 'max', 'min', 'abs', 'sign', 'square',
    'integer_pow', 'pow', 'rem', 'floor', 'ceil', 'round', 'select_n',
    'clamp', 'nextafter', 'add_any', 'atan2', 'erf_inv', 'copysign'))
_TRANSCENDENTAL = frozenset((
    'exp', 'exp2', 'log', 'log1p', 'expm1', 'tanh', 'logistic', 'sin', 'cos',
    'tan', 'atan', 'asin', 'acos', 'sqrt', 'rsqrt', 'cbrt', 'erf', 'erfc',
    'sinh', 'cosh', 'asinh', 'acosh', 'atanh'))
_REDUCTIONS = frozenset(('reduce_sum', 'reduce_max', 'reduce_min',
                         'reduce_prod', 'argmax', 'argmin', 'cumsum',
                         'cumlogsumexp', 'cummax', 'cummin'))


def _size(aval) -> int:
  return int(math.prod(getattr(aval, 'shape', ()) or (1,)))


def _sub_jaxprs(eqn) -> list[Any]:
  out = []
  for name in ('jaxpr', 'call_jaxpr', 'fun_jaxpr'):
    j = eqn.params.get(name)
    if j is not None:
      out.append(getattr(j, 'jaxpr', j))
  return out


def count_jaxpr(jaxpr, while_trips: float = 1.0) -> dict[str, float]:
  """{'matmul', 'elementwise', 'transcendental'} FLOPs of a (Closed)Jaxpr."""
  jaxpr = getattr(jaxpr, 'jaxpr', jaxpr)
  total = {'matmul': 0.0, 'elementwise': 0.0, 'transcendental': 0.0}

  def add(counts, times=1.0):
    for k, v in counts.items():
      total[k] += v * times

  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      k = math.prod(lhs[i] for i in contract)
      total['matmul'] += 2.0 * _size(eqn.outvars[0].aval) * k
    elif name == 'scan':
      add(count_jaxpr(eqn.params['jaxpr'], while_trips),
          eqn.params['length'])
    elif name == 'while':
      add(count_jaxpr(eqn.params['body_jaxpr'], while_trips), while_trips)
      add(count_jaxpr(eqn.params['cond_jaxpr'], while_trips), while_trips)
    elif name == 'cond':
      branches = [count_jaxpr(b, while_trips) for b in eqn.params['branches']]
      add(min(branches, key=lambda c: sum(c.values())))
    elif _sub_jaxprs(eqn):
      for sub in _sub_jaxprs(eqn):
        add(count_jaxpr(sub, while_trips))
    elif name in _ELEMENTWISE:
      total['elementwise'] += _size(eqn.outvars[0].aval)
    elif name in _TRANSCENDENTAL:
      total['transcendental'] += _size(eqn.outvars[0].aval)
    elif name in _REDUCTIONS:
      total['elementwise'] += _size(eqn.invars[0].aval)
  return total


def count(fn, *args, while_trips: float = 1.0) -> dict[str, float]:
  """FLOPs of ``fn(*args)`` (see ``count_jaxpr``), with their 'total'."""
  counts = count_jaxpr(jax.make_jaxpr(fn)(*args), while_trips)
  counts['total'] = sum(counts.values())
  return counts
