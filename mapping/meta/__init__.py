"""Meta-learning. Optimization-based: MAML, first-order MAML, Reptile, Meta-SGD, ANIL.
Metric-based: Prototypical, Matching and Siamese networks."""
from .functional import adaptation_curve, batched_inner_loop, check_finite_inner, functional, inner_loop, params_of
from .maml import ANIL, FOMAML, MAML, Learner, MetaSGD, maml_loss
from .metric import (FullContextEmbedding, MatchingNetwork, MetricLearner, PrototypicalNetwork, cosine_attention,
                     matching_log_probs, protonet_logits, prototypes, squared_distances)
from .reptile import Reptile, adapted_params, article_reptile_update, reptile_direction, reptile_update
from .siamese import (SiameseNetwork, class_scores, pairs_from_batch, pairwise_siamese_logits, sample_pairs,
                      siamese_logits)

__all__ = ["adaptation_curve", "ANIL", "FOMAML", "MAML", "Learner", "MetaSGD", "Reptile", "adapted_params", "article_reptile_update",
           "batched_inner_loop", "check_finite_inner", "functional", "inner_loop", "maml_loss", "params_of",
           "reptile_direction", "reptile_update",
           "FullContextEmbedding", "MatchingNetwork", "MetricLearner", "PrototypicalNetwork", "cosine_attention",
           "matching_log_probs", "protonet_logits", "prototypes", "squared_distances",
           "SiameseNetwork", "class_scores", "pairs_from_batch", "pairwise_siamese_logits", "sample_pairs",
           "siamese_logits"]
