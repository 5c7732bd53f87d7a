"""Meta-learning. Optimization-based: MAML, first-order MAML, Reptile, Meta-SGD, ANIL.
Metric-based: Prototypical, Matching and Siamese networks. Model-based: memory-augmented networks (MANN).

Every learner answers the protocol of :mod:`mapping.meta.protocol` (``meta_loss`` and ``predict``). The names
below are what a user calls; the machinery behind them (input checks, chunked and compiled executions,
checkpointed inner steps, shard bounds) stays in its submodule.
"""
from .analysis import exact_gradients, expected_gradients, flat_loss, taylor_errors, taylor_gradients
from .checks import EXECUTIONS
from .compiled import compile_seconds
from .curvature import inner_curvature
from .distributed import BACKENDS, DistributedContext, all_reduce_mean, all_reduce_meta_grads, init_from_env, shard
from .functional import (DEFAULT_CHUNK, DEFAULT_EXECUTION, adaptation_curve, batched_inner_loop, functional,
                         inner_loop, params_of)
from .mann import MANN, LSTMLearner, cosine_read_weights, least_used, write_weights
from .maml import ANIL, FOMAML, GRANULARITIES, MAML, Learner, MetaLearner, MetaSGD, maml_loss
from .metric import (FullContextEmbedding, MatchingNetwork, MetricLearner, PrototypicalNetwork, cosine_attention,
                     matching_log_probs, protonet_logits, prototypes, squared_distances)
from .protocol import Learns
from .reptile import (INNER, Reptile, adam_adapted_params, adapted_params, article_reptile_update,
                      reptile_direction, reptile_update)
from .siamese import (REDUCTIONS, SiameseNetwork, class_scores, pairs_from_batch, pairwise_siamese_logits,
                      sample_pairs, siamese_logits)

__all__ = [
    # the protocol and the learners
    "Learns", "MetaLearner", "MAML", "FOMAML", "MetaSGD", "ANIL", "Reptile", "Learner",
    "MetricLearner", "PrototypicalNetwork", "MatchingNetwork", "SiameseNetwork", "FullContextEmbedding",
    "MANN", "LSTMLearner",
    # their options
    "EXECUTIONS", "DEFAULT_EXECUTION", "DEFAULT_CHUNK", "GRANULARITIES", "INNER", "REDUCTIONS", "BACKENDS",
    # the functional core, one equation each
    "functional", "params_of", "inner_loop", "batched_inner_loop", "adaptation_curve", "maml_loss",
    "adapted_params", "adam_adapted_params", "reptile_direction", "reptile_update", "article_reptile_update",
    "prototypes", "squared_distances", "protonet_logits", "cosine_attention", "matching_log_probs",
    "siamese_logits", "pairwise_siamese_logits", "class_scores", "sample_pairs", "pairs_from_batch",
    "cosine_read_weights", "least_used", "write_weights",
    # analysis of the meta-gradient (chapter 4)
    "exact_gradients", "expected_gradients", "flat_loss", "taylor_errors", "taylor_gradients", "inner_curvature",
    # several processes, compiled steps
    "DistributedContext", "init_from_env", "shard", "all_reduce_meta_grads", "all_reduce_mean", "compile_seconds",
]
