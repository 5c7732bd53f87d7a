"""Meta-learning. Optimization-based: MAML, first-order MAML, Reptile, Meta-SGD, ANIL.
Metric-based: Prototypical, Matching and Siamese networks. Model-based: memory-augmented networks (MANN)."""
from .analysis import exact_gradients, expected_gradients, flat_loss, taylor_errors, taylor_gradients
from .checks import EXECUTIONS, check_finite_inner, checked_loss
from .chunked import Precomputed, chunked_mean
from .compiled import (COMPILE_ERRORS, CompiledFn, CompiledMetaLoss, compile_seconds, compiled_meta_loss,
                       meta_value_and_grad, sgd_adapted)
from .curvature import inner_curvature
from .distributed import (BACKENDS, DistributedContext, all_reduce_mean, all_reduce_meta_grads, init_from_env, shard,
                          shard_bounds)
from .functional import (DEFAULT_CHUNK, DEFAULT_EXECUTION, adaptation_curve, batched_inner_loop, functional,
                         inner_loop, params_of, validate_inner)
from .mann import MANN, LSTMLearner, cosine_read_weights, least_used, write_weights
from .maml import ANIL, FOMAML, GRANULARITIES, MAML, Learner, MetaLearner, MetaSGD, maml_loss
from .protocol import Learns
from .metric import (FullContextEmbedding, MatchingNetwork, MetricLearner, PrototypicalNetwork, cosine_attention,
                     infer_n_way, matching_log_probs, protonet_logits, prototypes, squared_distances)
from .recompute import check_checkpoint, recomputed
from .reptile import (INNER, Reptile, adam_adapted_params, adapted_params, article_reptile_update,
                      reptile_direction, reptile_update)
from .siamese import (REDUCTIONS, SiameseNetwork, class_scores, pairs_from_batch, pairwise_siamese_logits,
                      sample_pairs, siamese_logits)

__all__ = ["ANIL", "Learns", "DEFAULT_CHUNK", "DEFAULT_EXECUTION", "EXECUTIONS", "FOMAML", "GRANULARITIES", "Learner", "MAML",
           "INNER", "MetaLearner", "MetaSGD", "Precomputed", "Reptile", "adam_adapted_params", "adaptation_curve",
           "adapted_params",
           "article_reptile_update",
           "batched_inner_loop", "check_finite_inner", "checked_loss", "chunked_mean", "exact_gradients",
           "expected_gradients", "flat_loss", "functional", "inner_curvature", "inner_loop", "maml_loss",
           "params_of", "reptile_direction", "reptile_update", "taylor_errors", "taylor_gradients", "validate_inner",
           "FullContextEmbedding", "MatchingNetwork", "MetricLearner", "PrototypicalNetwork", "cosine_attention",
           "infer_n_way", "matching_log_probs", "protonet_logits", "prototypes", "squared_distances",
           "REDUCTIONS", "SiameseNetwork", "class_scores", "pairs_from_batch", "pairwise_siamese_logits",
           "sample_pairs", "siamese_logits",
           "MANN", "LSTMLearner", "cosine_read_weights", "least_used", "write_weights",
           "COMPILE_ERRORS", "CompiledFn", "CompiledMetaLoss", "compile_seconds", "compiled_meta_loss",
           "meta_value_and_grad", "sgd_adapted",
           "BACKENDS", "DistributedContext", "all_reduce_mean", "all_reduce_meta_grads", "init_from_env", "shard",
           "shard_bounds", "check_checkpoint", "recomputed"]
