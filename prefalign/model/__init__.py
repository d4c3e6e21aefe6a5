"""The motion-token model: tokenizer, scene features, encoder, decoder.

Pure functions of a parameter pytree: ``scene_from_state`` (Scene (B, ...)
from a SimulatorState batch), ``tokenize`` (Tokens (B, A, 16) of the log),
``init(rng, config, scene, tokens)``, ``log_probs`` / ``logits``
(teacher-forced, (B, A, 16[, V])), ``sequence_log_probs`` (U sequences per
scene, one encoding), ``encode`` and ``decode_step`` (KV-cached sampling).
``ModelConfig`` is frozen and hashable: pass it static.
"""

from prefalign.model import decoder
from prefalign.model import encoder
from prefalign.model import features
from prefalign.model import layers
from prefalign.model import motion_lm
from prefalign.model import tokenizer
from prefalign.model.encoder import SceneContext
from prefalign.model.features import Scene
from prefalign.model.features import SceneConfig
from prefalign.model.features import scene_from_state
from prefalign.model.motion_lm import ModelConfig
from prefalign.model.motion_lm import MotionLM
from prefalign.model.motion_lm import count_params
from prefalign.model.motion_lm import decode_step
from prefalign.model.motion_lm import encode
from prefalign.model.motion_lm import init
from prefalign.model.motion_lm import init_cache
from prefalign.model.motion_lm import log_probs
from prefalign.model.motion_lm import logits
from prefalign.model.motion_lm import sequence_log_probs
from prefalign.model.motion_lm import sequence_token_mask
from prefalign.model.motion_lm import token_mask
from prefalign.model.tokenizer import TokenizerConfig
from prefalign.model.tokenizer import Tokens
from prefalign.model.tokenizer import detokenize
from prefalign.model.tokenizer import tokenize

__all__ = [
    'decoder',
    'encoder',
    'features',
    'layers',
    'motion_lm',
    'tokenizer',
    'SceneContext',
    'Scene',
    'SceneConfig',
    'scene_from_state',
    'ModelConfig',
    'MotionLM',
    'count_params',
    'decode_step',
    'encode',
    'init',
    'init_cache',
    'log_probs',
    'logits',
    'sequence_log_probs',
    'sequence_token_mask',
    'token_mask',
    'Tokens',
    'TokenizerConfig',
    'detokenize',
    'tokenize',
]
