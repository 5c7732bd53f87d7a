"""The public surface of each subpackage, pinned: a name leaves or joins it only with this test changed."""
import importlib
import inspect

import pytest

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


SURFACE = {
    "mapping.data": {
        "TaskBatch", "EpisodeSampler", "EpisodeBatchSampler", "EpisodeCollate", "Sinusoid", "OmniglotSplit",
        "load_omniglot", "vinyals_split", "lake_split", "small_split", "LakeRuns", "LakeResult", "load_lake_runs",
        "evaluate_lake", "unseen_runs", "GLYPHS", "glyph_drawings", "episode_sequences", "offset_labels",
        "accuracy_by_instance", "MultiDigits", "MultiTaskDataset", "GradNormToy", "gradnorm_toy", "OmniglotMultitask",
        "omniglot_multitask", "shuffled_batches", "DomainShift", "inter_twinning_moons", "shifted_digits",
        "SHIFT_KINDS"},
    "mapping.multitask": {
        "HardSharing", "SoftSharing", "CrossStitch", "MMoE", "task_losses", "Weighting", "EqualWeighting",
        "RandomWeighting", "UncertaintyWeighting", "GradNorm", "DynamicWeightAverage", "FAMO", "Aggregator", "Mean",
        "PCGrad", "MGDA", "CAGrad", "UPGrad", "IMTLG", "mtl_backward", "task_jacobian", "gramian", "GramianRecorder",
        "conflict_map", "gradient_cosines", "gramian_cosines", "layer_groups", "pairwise_cosines",
        "pcgrad_coefficients"},
    "mapping.transfer": {
        "GradientReversal", "GradientReversalLayer", "grad_reverse", "DomainDiscriminator", "DomainAdversarialLoss",
        "dann_lambda", "dann_lr", "MMDLoss", "CORALLoss", "mmd", "coral", "covariance", "DEFAULT_KERNELS", "fit",
        "embed", "freeze", "feature_dim", "linear_probe", "fine_tune", "fine_tune_optimizer", "transfer_accuracy",
        "ROTATIONS", "rotations", "train_rotation", "pretrain_rotation", "random_backbone", "features",
        "calibrate_batch_norm", "cluster_scores", "evaluate_unsupervised"},
    "mapping.meta": META,
}


@pytest.mark.parametrize("name", SURFACE)
def test_each_subpackage_exports_its_pinned_names(name):
    module = importlib.import_module(name)
    assert set(module.__all__) == SURFACE[name] and len(module.__all__) == len(SURFACE[name])
    assert all(hasattr(module, n) for n in module.__all__)
