"""The public surface of mapping.meta, pinned: a name leaves or joins it only with this test changed."""
import inspect

import mapping.meta

META = {
    "Learns", "MetaLearner", "MAML", "FOMAML", "MetaSGD", "ANIL", "Reptile", "Learner", "MetricLearner",
    "PrototypicalNetwork", "MatchingNetwork", "SiameseNetwork", "FullContextEmbedding", "MANN", "LSTMLearner",
    "EXECUTIONS", "DEFAULT_EXECUTION", "DEFAULT_CHUNK", "GRANULARITIES", "INNER", "REDUCTIONS", "BACKENDS",
    "functional", "params_of", "inner_loop", "batched_inner_loop", "adaptation_curve", "maml_loss", "adapted_params",
    "adam_adapted_params", "reptile_direction", "reptile_update", "article_reptile_update", "prototypes",
    "squared_distances", "protonet_logits", "cosine_attention", "matching_log_probs", "siamese_logits",
    "pairwise_siamese_logits", "class_scores", "sample_pairs", "pairs_from_batch", "cosine_read_weights",
    "least_used", "write_weights", "exact_gradients", "expected_gradients", "flat_loss", "taylor_errors",
    "taylor_gradients", "inner_curvature", "DistributedContext", "init_from_env", "shard", "all_reduce_meta_grads",
    "all_reduce_mean", "compile_seconds",
}


def test_meta_exports_what_a_user_calls_and_nothing_else():
    assert set(mapping.meta.__all__) == META and len(mapping.meta.__all__) == len(META)
    internals = {"validate_inner", "checked_loss", "Precomputed", "CompiledFn", "COMPILE_ERRORS", "shard_bounds"}
    assert not internals & set(dir(mapping.meta)), "internals are reached through their submodules only"


def test_every_public_function_and_class_has_a_docstring():
    for name in mapping.meta.__all__:
        obj = getattr(mapping.meta, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert inspect.getdoc(obj), f"mapping.meta.{name} has no docstring"


def test_every_learner_answers_the_protocol_by_its_class():
    learners = [mapping.meta.MAML, mapping.meta.FOMAML, mapping.meta.MetaSGD, mapping.meta.ANIL,
                mapping.meta.Reptile, mapping.meta.PrototypicalNetwork, mapping.meta.MatchingNetwork,
                mapping.meta.SiameseNetwork]
    for cls in learners:
        for call in ("meta_loss", "predict"):
            params = list(inspect.signature(getattr(cls, call)).parameters)
            want = ["self", "batch", "loss_fn"] if call == "meta_loss" else [
                "self", "support_x", "support_y", "query_x", "loss_fn", "steps"]
            assert params[:len(want)] == want, f"{cls.__name__}.{call}{params}"
