"""Memory-augmented neural networks (model-based meta-learning): an LSTM controller with an LRUA memory.

Santoro, Bartunov, Botvinick, Wierstra & Lillicrap 2016, "Meta-learning with memory-augmented neural networks",
ICML. At step ``t`` the controller reads ``x_t`` with the previous step's one-hot label ``y_{t-1}`` (the label
offset, :func:`mapping.data.sequences.offset_labels`) and emits, for each of ``heads`` heads, a key ``k_t``;

* reads (eqs. 2-4): cosine similarity ``K(k_t, M_t(i))``, read weights ``w^r_t = softmax_i K``, read vector
  ``r_t = sum_i w^r_t(i) M_t(i)``;
* least-recently-used access (eqs. 5-8): usage ``w^u_t = gamma w^u_{t-1} + w^r_t + w^w_t`` (summed over heads),
  least-used weights ``w^lu_t(i) = 1`` for the ``n`` (= heads) smallest entries of ``w^u_t``, else 0, write
  weights ``w^w_t = sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1}`` and the write
  ``M_t(i) = M_{t-1}(i) + w^w_t(i) k_t``, after setting the least-used location (by ``w^u_{t-1}``) to zero.

The class scores read ``[h_t, r_t]``. The memory, usage and weights start from zero (the memory from a small
constant, so that cosines are defined) at every call: one call is one episode, and nothing is carried over.
As in common implementations, the read vectors of step ``t - 1`` are also fed back to the controller.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_int, check_number

EPS = 1e-8


def cosine_read_weights(keys: Tensor, memory: Tensor, strength: Tensor | None = None) -> Tensor:
    """Eqs. (2)-(3): ``softmax_i cos(k_h, M(i))`` for keys ``(B, H, D)`` and memory ``(B, N, D)``: ``(B, H, N)``.
    With ``strength`` ``(B, H, 1)`` the cosines are multiplied by it first (the key strength of the neural Turing
    machine's content addressing, Graves et al. 2014, eq. 5)."""
    sim = F.normalize(keys, dim=-1, eps=EPS) @ F.normalize(memory, dim=-1, eps=EPS).transpose(1, 2)  # (B, H, N)
    return (sim if strength is None else strength * sim).softmax(-1)


def least_used(usage: Tensor, n: int) -> Tensor:
    """Eq. (6): 1 at the ``n`` smallest entries of ``usage (B, N)`` (ties by index), 0 elsewhere: ``(B, N)``."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= usage.shape[-1]:
        raise ValueError(f"n must be an int in 1..{usage.shape[-1]} (memory slots), got {n!r}")
    idx = usage.argsort(dim=-1, stable=True)[..., :n]  # (B, n) the n smallest, ties to the lower index
    return torch.zeros_like(usage).scatter(-1, idx, 1.0)  # (B, N)


def write_weights(gate: Tensor, read_prev: Tensor, least_used_prev: Tensor) -> Tensor:
    """Eq. (7): ``sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1}``; ``gate`` = sigmoid(alpha)
    ``(B, H, 1)``, ``read_prev (B, H, N)``, ``least_used_prev (B, N)``: ``(B, H, N)``."""
    return gate * read_prev + (1 - gate) * least_used_prev[:, None]


class MANN(nn.Module):
    """``MANN(inputs, n_way)(x, y_prev)``: ``x (B, T, inputs)``, ``y_prev (B, T, n_way)`` one-hot labels offset by
    one step -> logits ``(B, T, n_way)``. Sizes as in the paper's Omniglot experiments: controller 200, memory
    128 x 40, 4 read heads, usage decay ``gamma`` 0.95.

    Read weights are a softmax of cosines in ``[-1, 1]``, so they can never be sharper than ``e^2 : 1`` between the
    best and the worst slot. ``key_strength=True`` lets the controller emit a strength ``beta_t = 1 + softplus(.)``
    per head that multiplies the cosines (the neural Turing machine's, Graves et al. 2014, eq. 5; not in Santoro
    et al.'s equations)."""

    def __init__(self, inputs: int, n_way: int, controller: int = 200, slots: int = 128, width: int = 40,
                 heads: int = 4, gamma: float = 0.95, key_strength: bool = False) -> None:
        super().__init__()
        for name, value in (("inputs", inputs), ("n_way", n_way), ("controller", controller), ("slots", slots),
                            ("width", width), ("heads", heads)):
            check_int(name, value, 1)
        check_int("heads", heads, 1, slots, why="at most slots")
        if check_number("gamma", gamma) > 1:
            raise ValueError(f"gamma must be in [0, 1] (usage decay), got {gamma!r}")
        self.n_way, self.slots, self.width, self.heads, self.gamma = n_way, slots, width, heads, gamma
        self.cell = nn.LSTMCell(inputs + n_way + heads * width, controller)
        self.key = nn.Linear(controller, heads * width)  # k_t per head
        self.alpha = nn.Linear(controller, heads)  # write gate per head
        self.beta = nn.Linear(controller, heads) if key_strength else None  # key strength per head
        self.out = nn.Linear(controller + heads * width, n_way)

    def forward(self, x: Tensor, y_prev: Tensor, trace: list | None = None) -> Tensor:
        """Logits ``(B, T, n_way)``; with ``trace`` a list, each step appends ``{"read", "write", "usage"}``."""
        if x.dim() != 3 or y_prev.shape != (*x.shape[:2], self.n_way):
            raise ValueError(f"x must be (B, T, inputs) and y_prev (B, T, n_way={self.n_way}), got "
                             f"{tuple(x.shape)} and {tuple(y_prev.shape)}")
        b, steps = x.shape[:2]
        h = c = x.new_zeros(b, self.cell.hidden_size)  # (B, controller)
        memory = x.new_full((b, self.slots, self.width), 1e-6)  # (B, N, D): a fresh memory per episode
        usage = x.new_zeros(b, self.slots)  # (B, N)
        read_w = x.new_zeros(b, self.heads, self.slots)  # (B, H, N)
        reads = x.new_zeros(b, self.heads, self.width)  # (B, H, D)
        logits = []
        for t in range(steps):
            h, c = self.cell(torch.cat([x[:, t], y_prev[:, t], reads.flatten(1)], -1), (h, c))  # (B, controller)
            keys = torch.tanh(self.key(h)).view(b, self.heads, self.width)  # (B, H, D)
            gate = torch.sigmoid(self.alpha(h))[..., None]  # (B, H, 1)
            write_w = write_weights(gate, read_w, least_used(usage, self.heads))  # (B, H, N)
            memory = memory * (1 - least_used(usage, 1))[..., None]  # zero the least-used slot
            memory = memory + write_w.transpose(1, 2) @ keys  # (B, N, D) eq. (8)
            beta = None if self.beta is None else 1 + F.softplus(self.beta(h))[..., None]  # (B, H, 1)
            read_w = cosine_read_weights(keys, memory, beta)  # (B, H, N)
            reads = read_w @ memory  # (B, H, D) eq. (4)
            usage = self.gamma * usage + read_w.sum(1) + write_w.sum(1)  # (B, N) eq. (5)
            if trace is not None:
                trace.append({"read": read_w.detach(), "write": write_w.detach(), "usage": usage.detach()})
            logits.append(self.out(torch.cat([h, reads.flatten(1)], -1)))  # (B, n_way)
        return torch.stack(logits, 1)  # (B, T, n_way)


class LSTMLearner(nn.Module):
    """The paper's baseline without external memory: ``LSTMLearner(inputs, n_way)(x, y_prev)``, same shapes as
    :class:`MANN`."""

    def __init__(self, inputs: int, n_way: int, hidden: int = 200) -> None:
        super().__init__()
        self.n_way = n_way
        self.lstm = nn.LSTM(inputs + n_way, hidden, batch_first=True)
        self.out = nn.Linear(hidden, n_way)

    def forward(self, x: Tensor, y_prev: Tensor) -> Tensor:
        if x.dim() != 3 or y_prev.shape != (*x.shape[:2], self.n_way):
            raise ValueError(f"x must be (B, T, inputs) and y_prev (B, T, n_way={self.n_way}), got "
                             f"{tuple(x.shape)} and {tuple(y_prev.shape)}")
        return self.out(self.lstm(torch.cat([x, y_prev], -1))[0])  # (B, T, n_way)


__all__ = ["LSTMLearner", "MANN", "cosine_read_weights", "least_used", "write_weights"]
