"""Metric-based few-shot classification: Prototypical Networks and Matching Networks.

Functional cores batched over tasks (a leading ``tasks`` dim, no Python loop over tasks), and small
``nn.Module`` wrappers in the style of easyfsl / learn2learn::

    prototypes(z_support, y_support, n_way)            (tasks, n_way, d)        Snell et al. 2017, eq. 1
    protonet_logits(z_query, protos)                   (tasks, q, n_way)        Snell et al. 2017, eq. 2
    cosine_attention(z_query, z_support)               (tasks, q, n*k)          Vinyals et al. 2016, eq. 2
    matching_log_probs(z_query, z_support, y, n_way)   (tasks, q, n_way)        Vinyals et al. 2016, eq. 1

The modules embed every support and query image of every task with ONE backbone call (``tasks * shots``
flattened), so a backbone with batch norm under ``bn="batch"`` normalises over the whole call.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.tasks import TaskBatch
from ..checks import check_int
from .checks import LossFn
from .compiled import CompiledFn, compiled_meta_loss


def check_n_way(n_way: int) -> None:
    check_int("n_way", n_way, 1, why="classes per task")


def check_integer_labels(y: Tensor, name: str = "support_y") -> None:
    """``y`` is a ``(tasks, shots)`` tensor of integer class labels (not float, not bool)."""
    if not isinstance(y, Tensor) or y.dim() != 2:
        raise ValueError(f"{name} must be a tensor of shape (tasks, shots), got {tuple(getattr(y, 'shape', ()))}")
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise ValueError(f"{name} must hold integer class labels (int64), got dtype {y.dtype}")


def check_labels(y: Tensor, n_way: int, name: str = "support_y", *, every_class: bool = True) -> None:
    """``y`` holds integer labels in ``0 .. n_way - 1`` and, with ``every_class``, each label in every task."""
    check_n_way(n_way)
    check_integer_labels(y, name)
    if y.numel() and (y.min() < 0 or y.max() >= n_way):
        raise ValueError(f"{name} must hold labels in 0..{n_way - 1} (n_way={n_way}), "
                         f"got values in {int(y.min())}..{int(y.max())}")
    if every_class:
        counts = F.one_hot(y.long(), n_way).sum(1)  # (tasks, n_way)
        if (counts == 0).any():
            task, label = (int(i) for i in (counts == 0).nonzero()[0])
            raise ValueError(f"{name} has no example of class {label} in task {task}; every class "
                             f"0..{n_way - 1} needs at least one support example")


def check_embeddings(z: Tensor, name: str, tasks: int | None = None, dim: int | None = None) -> None:
    if not isinstance(z, Tensor) or z.dim() != 3 or not z.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor of shape (tasks, shots, dim), "
                         f"got {tuple(getattr(z, 'shape', ()))}")
    if tasks is not None and z.shape[0] != tasks:
        raise ValueError(f"{name} has {z.shape[0]} tasks but the support set has {tasks}")
    if dim is not None and z.shape[2] != dim:
        raise ValueError(f"{name} has embedding dim {z.shape[2]} but the support set has {dim}")


def _check_support(z_support: Tensor, y_support: Tensor, n_way: int) -> None:
    check_embeddings(z_support, "z_support")
    check_labels(y_support, n_way)
    if y_support.shape != z_support.shape[:2]:
        raise ValueError(f"y_support has shape {tuple(y_support.shape)} but z_support has (tasks, shots) = "
                         f"{tuple(z_support.shape[:2])}")


def prototypes(z_support: Tensor, y_support: Tensor, n_way: int) -> Tensor:
    """Class prototypes ``c_k = 1/|S_k| sum_{(x_i, y_i) in S_k} f(x_i)`` (Snell et al. 2017, eq. 1).

    ``z_support (tasks, n*k, d)``, ``y_support (tasks, n*k)`` int in ``0..n_way-1`` (any order, any number of
    shots per class, at least one) -> ``(tasks, n_way, d)``.
    """
    _check_support(z_support, y_support, n_way)
    one_hot = F.one_hot(y_support.long(), n_way).to(z_support.dtype)  # (tasks, n*k, n_way)
    sums = one_hot.transpose(1, 2) @ z_support  # (tasks, n_way, d)
    return sums / one_hot.sum(1)[..., None]  # (tasks, n_way, d)


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """``||a_i - b_j||^2`` for ``a (tasks, q, d)``, ``b (tasks, m, d)`` -> ``(tasks, q, m)``.

    Computed from the differences, not ``|a|^2 + |b|^2 - 2ab``: exact, never negative, finite gradient at 0.
    """
    return (a[:, :, None, :] - b[:, None, :, :]).pow(2).sum(-1)  # (tasks, q, m)


def protonet_logits(z_query: Tensor, protos: Tensor) -> Tensor:
    """``-d(f(x), c_k)`` with ``d`` the squared Euclidean distance: the logits of Snell et al. 2017, eq. 2.

    ``p(y = k | x) = softmax_k(-d(f(x), c_k))``; ``z_query (tasks, q, d)``, ``protos (tasks, n_way, d)``
    -> ``(tasks, q, n_way)``, for :func:`torch.nn.functional.cross_entropy`.
    """
    check_embeddings(protos, "prototypes")
    check_embeddings(z_query, "z_query", protos.shape[0], protos.shape[2])
    return -squared_distances(z_query, protos)  # (tasks, q, n_way)


def check_scale(scale: float) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 40:
        raise ValueError(f"scale must be a float in (0, 40] (1 = Vinyals et al.'s plain cosine), got {scale!r}")


def cosine_attention(z_query: Tensor, z_support: Tensor, scale: float = 1.0, eps: float = 1e-8) -> Tensor:
    """``a(x^, x_i) = exp(c(f(x^), g(x_i))) / sum_j exp(c(f(x^), g(x_j)))``, ``c`` the cosine similarity.

    Vinyals et al. 2016, eq. 2: a softmax over the support set. ``z_query (tasks, q, d)``,
    ``z_support (tasks, m, d)`` -> ``(tasks, q, m)``, rows summing to one. ``scale`` multiplies the cosine
    before the softmax (an inverse temperature, as in later cosine classifiers; 1 is the paper's).
    """
    check_scale(scale)
    check_embeddings(z_support, "z_support")
    check_embeddings(z_query, "z_query", z_support.shape[0], z_support.shape[2])
    q = F.normalize(z_query, dim=-1, eps=eps)  # (tasks, q, d)
    s = F.normalize(z_support, dim=-1, eps=eps)  # (tasks, m, d)
    return torch.softmax(scale * (q @ s.transpose(1, 2)), dim=-1)  # (tasks, q, m)


def matching_log_probs(z_query: Tensor, z_support: Tensor, y_support: Tensor, n_way: int,
                       scale: float = 1.0) -> Tensor:
    """``log P(y^ | x^, S)`` with ``P = sum_i a(x^, x_i) y_i``, ``y_i`` one-hot (Vinyals et al. 2016, eq. 1).

    ``(tasks, q, n_way)`` log-probabilities for :func:`torch.nn.functional.nll_loss`. The log is finite:
    cosines lie in ``[-1, 1]``, so every attention weight is at least ``exp(-2 scale) / m`` (``scale <= 40``
    keeps it far above float32's underflow) and every class has a support example.
    """
    _check_support(z_support, y_support, n_way)
    attention = cosine_attention(z_query, z_support, scale)  # (tasks, q, m)
    one_hot = F.one_hot(y_support.long(), n_way).to(attention.dtype)  # (tasks, m, n_way)
    return (attention @ one_hot).log()  # (tasks, q, n_way)


class FullContextEmbedding(nn.Module):
    """Full-context embeddings of Matching Networks (Vinyals et al. 2016, §2.1.2 and appendix A).

    Support (appendix A.2): ``g(x_i, S) = h->_i + h<-_i + g'(x_i)``, a bidirectional LSTM over the support set
    read as a sequence (so its order matters) with a skip connection from the backbone embedding ``g'``.
    Query (appendix A.1, eq. 3-6): ``f(x^, S) = attLSTM(f'(x^), g(S), K)`` with ``K = steps`` read-outs,
    ``h^_k, c_k = LSTM(f'(x^), [h_{k-1}, r_{k-1}], c_{k-1})`` (3), ``h_k = h^_k + f'(x^)`` (4),
    ``r_{k-1} = sum_i a(h_{k-1}, g(x_i)) g(x_i)`` (5), ``a(h_{k-1}, g(x_i)) = softmax_i(h_{k-1} . g(x_i))`` (6),
    a dot product, not the cosine of eq. 2. We start at ``h_0 = f'(x^)``, ``c_0 = 0`` (the paper leaves it open);
    the output is ``h_K`` (``steps = 0`` returns ``f'(x^)``). The recurrent state is the concatenation
    ``[h, r]`` of width ``2 * dim``, so the gates are one linear map of ``[f'(x^), h_{k-1}, r_{k-1}]``.
    """

    def __init__(self, dim: int, steps: int = 2) -> None:
        super().__init__()
        for name, value, low in (("dim", dim, 1), ("steps", steps, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.dim, self.steps = dim, steps
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.gates = nn.Linear(3 * dim, 4 * dim)  # the attention LSTM: [f'(x^), h_{k-1}, r_{k-1}] -> i, f, g, o

    def embed_support(self, z_support: Tensor) -> Tensor:
        """``g(S)``: ``(tasks, m, dim) -> (tasks, m, dim)``."""
        h, _ = self.support_lstm(z_support)  # (tasks, m, 2 * dim)
        return h[..., :self.dim] + h[..., self.dim:] + z_support  # (tasks, m, dim)

    def embed_query(self, z_query: Tensor, g_support: Tensor) -> Tensor:
        """``f(x^, S)``: ``z_query (tasks, q, dim)``, ``g_support (tasks, m, dim)`` -> ``(tasks, q, dim)``."""
        h, c = z_query, torch.zeros_like(z_query)  # (tasks, q, dim) each
        for _ in range(self.steps):
            read = torch.softmax(h @ g_support.transpose(1, 2), dim=-1) @ g_support  # (tasks, q, dim)
            i, f, g, o = self.gates(torch.cat([z_query, h, read], -1)).chunk(4, -1)  # (tasks, q, dim) each
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (tasks, q, dim)
            h = torch.sigmoid(o) * torch.tanh(c) + z_query  # (tasks, q, dim)
        return h

    def forward(self, z_query: Tensor, z_support: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x^, S) (tasks, q, dim), g(S) (tasks, m, dim))``."""
        check_embeddings(z_support, "z_support", dim=self.dim)
        check_embeddings(z_query, "z_query", z_support.shape[0], self.dim)
        g_support = self.embed_support(z_support)  # (tasks, m, dim)
        return self.embed_query(z_query, g_support), g_support


def infer_n_way(batch: TaskBatch) -> int:
    """``n_way`` of an episode: ``info["classes"]`` of :class:`~mapping.data.EpisodeSampler`, else max label + 1."""
    classes = batch.info.get("classes")
    if isinstance(classes, Tensor) and classes.dim() == 2:
        return classes.shape[1]
    check_integer_labels(batch.support_y)
    return int(batch.support_y.max()) + 1


def checked_episode(batch: TaskBatch, loss_fn: LossFn | None) -> int:
    """Check a metric learner's ``meta_loss`` arguments; the episode's ``n_way`` (:func:`infer_n_way`)."""
    if not isinstance(batch, TaskBatch):
        raise ValueError(f"batch must be a mapping.data.TaskBatch, got {type(batch).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable loss_fn(scores, labels), got {type(loss_fn).__name__}")
    n_way = infer_n_way(batch)
    check_labels(batch.query_y, n_way, "query_y", every_class=False)
    return n_way


class MetricLearner(nn.Module):
    """A backbone used as an embedding; :meth:`embed` runs it once on all images of all tasks.

    With a ``bn="batch"`` :class:`~mapping.nn.Conv4` the statistics of that one call are pooled over the
    support and query images of every task in it, so a prediction depends on the rest of the call
    (transductive); evaluate one task per call (``batch.task(i)``) to match one-episode training, or use
    ``bn="running"`` and ``eval()`` for predictions that depend on the query image alone (the ProtoNets code).
    """

    output = "logits"  # what forward returns: "logits" (cross-entropy) or "log_probs" (nll)

    def __init__(self, backbone: nn.Module, *, compile: bool | Mapping = False) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise ValueError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone
        self.diagnostics: dict[str, Tensor] = {}
        options = compiled_meta_loss(compile, "vmap")
        # torch.compile of the episode loss (mapping.meta.compiled): same loss and gradients, checks run eagerly
        self.compiled = None if options is None else CompiledFn(self._episode_loss, **options.options)

    def embed(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> tuple[Tensor, Tensor]:
        """Check an episode and embed it: ``(z_support (tasks, n*k, d), z_query (tasks, q, d))``."""
        for name, x in (("support_x", support_x), ("query_x", query_x)):
            if not isinstance(x, Tensor) or x.dim() < 3:
                raise ValueError(f"{name} must be a tensor of shape (tasks, shots, *image), "
                                 f"got {tuple(getattr(x, 'shape', ()))}")
        if query_x.shape[0] != support_x.shape[0] or query_x.shape[2:] != support_x.shape[2:]:
            raise ValueError(f"query_x has shape {tuple(query_x.shape)} but support_x has {tuple(support_x.shape)}; "
                             "they must share the tasks dim and the image shape")
        check_labels(support_y, n_way)
        if support_y.shape != support_x.shape[:2]:
            raise ValueError(f"support_y has shape {tuple(support_y.shape)} but support_x has (tasks, shots) = "
                             f"{tuple(support_x.shape[:2])}")
        (tasks, m), q = support_x.shape[:2], query_x.shape[1]
        images = torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)])  # (tasks*(m+q), *image)
        z = self.backbone(images)  # (tasks*(m+q), d)
        if z.dim() != 2 or z.shape[0] != images.shape[0]:
            raise ValueError(f"the backbone must map (batch, *image) to (batch, dim), got {tuple(z.shape)}")
        return z[:tasks * m].reshape(tasks, m, -1), z[tasks * m:].reshape(tasks, q, -1)  # (tasks, m, d), (tasks, q, d)

    def meta_loss(self, batch: TaskBatch, loss_fn: LossFn | None = None) -> Tensor:
        """Mean query loss over all tasks (:mod:`mapping.meta.protocol`): ``loss_fn(scores (tasks*q, n_way),
        labels (tasks*q,))``, by default the paper's cross-entropy (``nll_loss`` on log-probabilities). The query
        accuracy (a fraction, no gradient) goes to ``self.diagnostics["accuracy"]``; ``n_way`` comes from
        :func:`infer_n_way`."""
        n_way = checked_episode(batch, loss_fn)
        if self.compiled is not None and loss_fn is None:
            check_labels(batch.support_y, n_way)
            loss, accuracy = self.compiled(*batch.tensors(), n_way)
        else:
            loss, accuracy = self._episode_loss(*batch.tensors(), n_way, loss_fn)
        self.diagnostics = {"accuracy": accuracy}
        return loss

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, loss_fn: LossFn | None = None,
                steps: int | None = None) -> Tensor:
        """Class scores of each task's queries ``(tasks, q, n_way)`` (what :meth:`forward` returns), ``n_way``
        being the largest support label + 1; no gradient. ``loss_fn`` and ``steps`` are unused: the support set
        enters through the embedding alone (:mod:`mapping.meta.protocol`)."""
        check_integer_labels(support_y)
        with torch.no_grad():
            return self(support_x, support_y, query_x, int(support_y.max()) + 1)  # (tasks, q, n_way)

    def _episode_loss(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor,
                      n_way: int, loss_fn: LossFn | None = None) -> tuple[Tensor, Tensor]:
        out = self(support_x, support_y, query_x, n_way)  # (tasks, q, n_way)
        target = query_y.long().flatten()  # (tasks*q,)
        score = out.flatten(0, 1)  # (tasks*q, n_way)
        if loss_fn is None:
            loss_fn = F.nll_loss if self.output == "log_probs" else F.cross_entropy
        return loss_fn(score, target), (score.argmax(-1) == target).float().mean().detach()


class PrototypicalNetwork(MetricLearner):
    """Prototypical Networks (Snell, Swersky & Zemel 2017): ``forward`` returns logits ``-||f(x) - c_k||^2``."""

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        z_support, z_query = self.embed(support_x, support_y, query_x, n_way)  # (tasks, m, d), (tasks, q, d)
        return protonet_logits(z_query, prototypes(z_support, support_y, n_way))  # (tasks, q, n_way)


class MatchingNetwork(MetricLearner):
    """Matching Networks (Vinyals et al. 2016): ``forward`` returns log-probabilities (eq. 1-2).

    ``fce=True`` adds :class:`FullContextEmbedding` of width ``dim`` (default ``backbone.out_dim``) with
    ``steps`` attention read-outs. ``scale`` multiplies the cosines (1 = the paper). With ``scale=1`` on a
    ReLU backbone such as Conv-4 the embeddings are non-negative, cosines lie in ``[0, 1]`` and no episode's
    loss can approach zero; training keeps pushing the cosines between classes to 0 by making the features
    sparse. On synthetic classes (5-way 1-shot, Adam 1e-3) held-out accuracy reached 0.80 after 150 episodes
    with ``hidden=16`` and fell to 0.28 after 600, with over 90% of the features at zero (0.42 with
    ``hidden=64``); ``scale=10`` or ``fce=True`` (LSTM features can be negative) trained stably.
    """

    output = "log_probs"

    def __init__(self, backbone: nn.Module, fce: bool = False, *, dim: int | None = None, steps: int = 2,
                 scale: float = 1.0, compile: bool | Mapping = False) -> None:
        super().__init__(backbone, compile=compile)
        check_scale(scale)
        self.scale = scale
        dim = getattr(backbone, "out_dim", None) if dim is None else dim
        if fce and dim is None:
            raise ValueError("dim must give the backbone's embedding size for fce=True "
                             "(the backbone has no out_dim attribute)")
        self.fce = FullContextEmbedding(dim, steps) if fce else None

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        z_support, z_query = self.embed(support_x, support_y, query_x, n_way)  # (tasks, m, d), (tasks, q, d)
        if self.fce is not None:
            z_query, z_support = self.fce(z_query, z_support)  # (tasks, q, d), (tasks, m, d)
        return matching_log_probs(z_query, z_support, support_y, n_way, self.scale)  # (tasks, q, n_way)


__all__ = ["FullContextEmbedding", "MatchingNetwork", "MetricLearner", "PrototypicalNetwork",
           "cosine_attention", "infer_n_way", "matching_log_probs", "protonet_logits", "prototypes",
           "squared_distances"]
