"""An independent reference for the meta-gradient: a plain per-task loop with ``torch.autograd.grad``.

It shares no code with ``mapping.meta`` (no ``torch.func``, no ``vmap``): the model runs as an ordinary
module whose parameters are swapped by :func:`torch.func.functional_call`, one task at a time.
"""
import torch
from torch.func import functional_call


def reference_meta_loss(model, batch, loss_fn, *, steps, alpha, first_order=False, adapt=None):
    """Mean over tasks of the query loss after ``steps`` SGD steps; the graph reaches ``model``'s parameters
    (and ``alpha``'s tensors, for Meta-SGD)."""
    params = dict(model.named_parameters())
    names = list(params) if adapt is None else list(adapt)
    rates = alpha if isinstance(alpha, dict) else {k: alpha for k in names}
    losses = []
    for t in range(batch.num_tasks):
        fast = dict(params)
        for _ in range(steps):
            out = functional_call(model, fast, (batch.support_x[t],))
            loss = loss_fn(out, batch.support_y[t])
            grads = torch.autograd.grad(loss, [fast[k] for k in names], create_graph=not first_order)
            fast = {**fast, **{k: fast[k] - rates[k] * (g.detach() if first_order else g)
                               for k, g in zip(names, grads)}}
        out = functional_call(model, fast, (batch.query_x[t],))
        losses.append(loss_fn(out, batch.query_y[t]))
    return torch.stack(losses).mean()


def relative_error(a, b):
    """``||a - b|| / ||b||`` over lists of tensors."""
    num = sum(((x - y) ** 2).sum() for x, y in zip(a, b)).sqrt()
    return (num / sum((y ** 2).sum() for y in b).sqrt()).item()
