"""Meta-learning. Optimization-based: MAML, first-order MAML, Reptile, Meta-SGD, ANIL."""
from .functional import adaptation_curve, batched_inner_loop, check_finite_inner, functional, inner_loop, params_of
from .maml import ANIL, FOMAML, MAML, Learner, MetaSGD, maml_loss
from .reptile import Reptile, adapted_params, article_reptile_update, reptile_direction, reptile_update

__all__ = ["adaptation_curve", "ANIL", "FOMAML", "MAML", "Learner", "MetaSGD", "Reptile", "adapted_params", "article_reptile_update",
           "batched_inner_loop", "check_finite_inner", "functional", "inner_loop", "maml_loss", "params_of",
           "reptile_direction", "reptile_update"]
