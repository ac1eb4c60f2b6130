"""The output head and the cross-entropy, chunk by chunk: `lm_loss` without the (N, V) logits.

`lm_loss` asks the model for logits (B, T, V) and hands them to `F.cross_entropy`. For GPT-2 at
B x T = 2 x 256 that tensor holds 512 x 50,257 floats (103 MB), and the loss keeps two more of
its size (the log-probabilities, then their gradient). For a small model with GPT-2's vocabulary
(the TinyStories fallback) the head and the loss are most of a training step.

`chunked_lm_loss` computes the same number and the same gradients, but never holds more than
`chunk_size` rows of logits. Write h for the final hidden states, flattened to (N, C), W for the
head's weight (V, C) and z = h W^T for the logits. For one position with target y,

    loss = logsumexp(z) - z[y]        d loss / d z = softmax(z) - onehot(y)

so as soon as a chunk's logits exist we can finish with them: add the chunk's loss, and push its
gradient d z through the matmul, d h = d z W (the chunk's rows of the hidden-state gradient) and
d W += d z^T h (summed over chunks), then drop the logits. The backward pass has nothing left to
do but scale these stored gradients by the incoming gradient and hand them on. This is the idea
behind "fused linear cross-entropy" kernels (e.g. Liger Kernel's, Hsu et al. 2024), written here
with plain PyTorch ops.

The cost moves rather than vanishes: the same three matmuls as `lm_loss`, but d W is a (V, C)
float32 buffer made during the forward pass instead of at the start of the backward pass. What
disappears are the (N, V) tensors and the passes of element-wise work over them.

This is an option, not the default: the model still returns logits from `forward`, and
`lm_loss` stays the loss the chapters teach with. Both are tested equal (loss and gradients).
"""

from __future__ import annotations


import torch
import torch.nn as nn

from ch02_data.checks import positive_int

from .device import unwrap
from .losses import IGNORE_INDEX, NoTargetsError, split_lm_batch

# Rows of logits per chunk: at most 512 x V float32 values exist at once (103 MB for GPT-2's V).
# On a 2-core CPU (paired steps, other jobs running) 512 rows beat 256 by 1-3% of a training step
# (GPT-2 124M at 2 x 256; the TinyStories fallback at 4 x 256) and 1024 by 1% (the fallback):
# smaller chunks add passes over the (V, C) gradient buffer, larger ones hold more logits.
DEFAULT_CHUNK_SIZE = 512
# Device types whose chunk logits are computed as (V, n) columns (see _chunk_loop); elsewhere
# they are (n, V) rows. A tuple so that the tests can run the row layout on the CPU too.
COLUMN_LAYOUT_DEVICES = ("cpu",)


def _check_chunk_size(chunk_size) -> None:
    positive_int("chunk_size", chunk_size, f"rows of logits computed at once, e.g. {DEFAULT_CHUNK_SIZE}")


def _counted_rows(targets: torch.Tensor, V: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Which flattened positions count: (their indices, or None when all count; their N targets,
    (N,) int64). Raises NoTargetsError when none counts and ValueError for a target outside
    [0, V). One read-back from the device, made before any model work is queued."""
    flat = targets.reshape(-1)  # (B*T,)
    counted = flat != IGNORE_INDEX
    # Count, smallest and largest counted target in one transfer (a GPU waits once, not three times).
    n, lo, hi = torch.stack([counted.sum(), flat.masked_fill(~counted, 0).min(),
                             flat.masked_fill(~counted, 0).max()]).tolist()
    if n == 0:
        raise NoTargetsError(f"the batch has no counted targets: all {flat.numel()} targets are "
                             f"{IGNORE_INDEX}, so its mean loss is undefined (0/0)")
    if lo < 0 or hi >= V:
        bad = lo if lo < 0 else hi
        raise ValueError(f"target {bad} is not a class of this head; targets must be in [0, {V - 1}] "
                         f"or {IGNORE_INDEX} (not counted)")
    if n == flat.numel():  # pretraining: every position counts, no gather needed
        return None, flat.long()
    rows = counted.nonzero().squeeze(1)  # (N,) positions of the counted targets
    return rows, flat[rows].long()


def _chunk_loop(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor,
                chunk_size: int, mm_dtype: torch.dtype, with_grads: bool, weight_grad: bool = True):
    """Mean cross-entropy of the N rows of h (N, C) against targets y (N,), chunk by chunk.

    Returns (loss, grads): a float32 scalar, and with `with_grads` the gradients of that mean
    with respect to h (N, C), weight (V, C) and bias (V,) or None; else grads is None.
    The matmuls run in `mm_dtype` (bfloat16 under autocast, else float32); the soft-max, the
    loss and the summed gradients of weight and bias always in float32.
    `weight_grad=False` skips d W and d b (for a frozen head, as with LoRA): one matmul of three.
    """
    N, V = h.shape[0], weight.shape[0]
    fp32 = mm_dtype == torch.float32
    w = weight.to(mm_dtype)  # (V, C); no copy when it already has that dtype
    loss_sum = torch.zeros((), dtype=torch.float32, device=h.device)
    # One logits buffer for every chunk: a fresh (n, V) tensor per chunk would be fresh memory
    # each time, which the operating system must hand over (and zero) page by page.
    z_buf = torch.empty(min(chunk_size, N) * V, dtype=torch.float32, device=h.device) if fp32 else None
    # On the CPU the chunk's logits are computed as W h_c^T, (V, n) in memory, and used through
    # the transposed view (n, V): MKL writes that product, and reads it back for d W, faster
    # than h_c W^T (a 2-core EPYC, 4 x 256 positions, C = 256: 0.61 against 0.72 s for the
    # head's forward and backward). The numbers are the same products, summed in another order.
    columns = h.device.type in COLUMN_LAYOUT_DEVICES
    grad_h = grad_w = grad_b = None
    if with_grads:
        grad_h = torch.empty_like(h)  # (N, C): each chunk fills its own rows
        if bias is not None and weight_grad:
            grad_b = torch.zeros(V, dtype=torch.float32, device=bias.device)
    for start in range(0, N, chunk_size):
        h_c = h[start:start + chunk_size].to(mm_dtype)  # (n, C), n <= chunk_size
        y_c = y[start:start + chunk_size]  # (n,)
        n = h_c.shape[0]
        if fp32 and columns:  # (n, V) logits, stored as (V, n): the only logits at any time
            z = torch.mm(w, h_c.T, out=z_buf[:V * n].view(V, n)).T
        elif fp32:
            z = torch.mm(h_c, w.T, out=z_buf[:n * V].view(n, V))  # (n, V)
        else:
            z = (h_c @ w.T).float()  # bf16 products, rounded once, then float32 from here on
        if bias is not None:
            z += bias.float()
        z_y = z.gather(1, y_c.unsqueeze(1)).squeeze(1)  # (n,) logit of each target, before z is reused
        # logsumexp with the max subtracted first, so exp cannot overflow; exp is taken once per
        # logit, in place: z now holds exp(z - max).
        z_max = z.amax(dim=1, keepdim=True)  # (n, 1)
        e = z.sub_(z_max).exp_()  # (n, V)
        total = e.sum(dim=1, keepdim=True)  # (n, 1)
        loss_sum += (z_max.squeeze(1) + total.log().squeeze(1) - z_y).sum()
        if not with_grads:
            continue
        # d(mean loss)/dz = (softmax(z) - onehot(y)) / N, built in the same buffer: dividing by
        # total * N normalises the soft-max and takes the mean in one pass over the chunk.
        dz = e.mul_((total * N).reciprocal_())  # (n, V)
        dz.scatter_add_(1, y_c.unsqueeze(1), torch.full((n, 1), -1.0 / N, device=dz.device))
        dz_mm = dz.to(mm_dtype)
        grad_h[start:start + n] = dz_mm @ w  # (n, V) @ (V, C) -> (n, C)
        if not weight_grad:
            continue
        if bias is not None:
            grad_b += dz.sum(dim=0)  # z = h W^T + b: each row's dz reaches b once
        # d W = sum over chunks of dz^T h_c: the first chunk writes the (V, C) buffer, the
        # others add into it in place (addmm_), so no second (V, C) tensor is ever made.
        if grad_w is None:
            grad_w = (dz_mm.T @ h_c).float()  # (V, n) @ (n, C) -> (V, C)
        elif fp32:
            grad_w.addmm_(dz_mm.T, h_c)
        else:  # addmm_ cannot add bf16 products into a float32 buffer; add a rounded copy
            grad_w += (dz_mm.T @ h_c).float()
    return loss_sum / N, ((grad_h, grad_w, grad_b) if with_grads else None)


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits h W^T (+ b), with all the gradient work done in forward."""

    @staticmethod
    def forward(ctx, h, weight, bias, y, chunk_size, mm_dtype):
        # Autocast is switched off inside: `mm_dtype` already says what it would have chosen, and
        # explicit casts keep the float32 parts float32.
        # A frozen head (LoRA, or requires_grad_(False)) needs no d W: skip its matmul.
        weight_grad = ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        with torch.autocast(device_type=h.device.type, enabled=False):
            loss, ctx.grads = _chunk_loop(h, weight, bias, y, chunk_size, mm_dtype, True, weight_grad)
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        return loss  # the mean over counted targets, as F.cross_entropy

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.grads is None:
            raise RuntimeError("backward through chunked_lm_loss ran a second time; its gradients "
                               "are handed on once (retain_graph=True is not supported)")
        grads, ctx.grads = ctx.grads, None  # let go of them: autograd may keep the buffers as .grad
        # Chain rule: d out / d x = grad_out * d loss / d x. grad_out is 1 for a plain
        # loss.backward(); on the CPU reading it costs nothing, and skipping the multiplication
        # saves a pass over the (V, C) buffer. (On a GPU reading it would wait for the device.)
        skip = grad_out.device.type == "cpu" and grad_out.item() == 1.0
        out = []
        for g, dtype in zip(grads, ctx.dtypes):
            if g is not None and not skip:
                g = g.mul_(grad_out)  # in place: no second (V, C) tensor
            out.append(None if g is None else g.to(dtype))
        return (*out, None, None, None)  # nothing for y, chunk_size, mm_dtype


def _matmul_dtype(device: torch.device) -> torch.dtype:
    """The dtype autocast would run the head's matmul in here, else float32."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def _mean_loss(hidden, weight, bias, targets, rows, y, chunk_size) -> torch.Tensor:
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden has shape {tuple(hidden.shape)} and targets {tuple(targets.shape)}; "
                         "hidden must be targets' shape plus one channel dimension")
    h = hidden.reshape(-1, hidden.shape[-1])  # (B*T, C)
    if rows is not None:
        h = h.index_select(0, rows)  # (N, C): positions whose target is -100 are never computed
    mm_dtype = _matmul_dtype(h.device)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (h, weight, bias))
    if not needs_grad:  # evaluation: the loss alone, no gradient buffers
        with torch.autocast(device_type=h.device.type, enabled=False):
            loss, _ = _chunk_loop(h, weight, bias, y, chunk_size, mm_dtype, False)
        return loss
    return _LinearCrossEntropy.apply(h, weight, bias, y, chunk_size, mm_dtype)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """`F.cross_entropy(hidden @ weight.T + bias, targets, ignore_index=-100)`, chunk by chunk.

    Args:
        hidden: (..., C) hidden states, e.g. (B, T, C) from `GPTModel.hidden_states`.
        weight: (V, C) output-head weight; bias: (V,) or None (GPT-2's head has none).
        targets: (...) int class ids in [0, V), or -100 where a position does not count.
        chunk_size: rows of logits computed at once; at most chunk_size x V floats exist.
    Returns:
        A float32 scalar: the mean loss over counted positions, differentiable with respect to
        hidden, weight and bias.
    Raises:
        NoTargetsError: when every target is -100.
    """
    _check_chunk_size(chunk_size)
    rows, y = _counted_rows(targets, weight.shape[0])
    return _mean_loss(hidden, weight, bias, targets, rows, y, chunk_size)


def _plain_model(model: nn.Module) -> nn.Module:
    """The GPTModel inside a torch.compile wrapper; DDP refused (see chunked_lm_loss)."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        raise ValueError(f"chunked_lm_loss calls model.hidden_states, which a {type(model).__name__} "
                         "wrapper does not run through its forward (so it would not synchronise "
                         "gradients); use lm_loss for a wrapped model")
    model = unwrap(model)
    has_parts = callable(getattr(model, "hidden_states", None)) and isinstance(
        getattr(model, "out_head", None), nn.Linear)
    if not has_parts:
        raise TypeError(f"chunked_lm_loss needs a model with hidden_states() and a linear out_head "
                        f"(a GPTModel); got a {type(model).__name__}; use lm_loss for other models")
    return model


def chunked_lm_loss(model: nn.Module, batch, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """`lm_loss` computed without the (B, T, V) logits: same value, same gradients.

    Args:
        model: a GPTModel (or a torch.compile wrapper of one, whose `hidden_states` then runs
            uncompiled); not a DistributedDataParallel wrapper, which is refused.
        batch: `(inputs, targets)`, both (B, T) int64; targets of -100 do not count.
        chunk_size: rows of logits computed at once (see `DEFAULT_CHUNK_SIZE`). For another
            value in `train`, pass `functools.partial(chunked_lm_loss, chunk_size=...)`.
    Returns:
        A float32 scalar: the mean of -log p(target) over all counted positions.
    Raises:
        NoTargetsError: when every target is -100 (checked before the forward pass).
    """
    _check_chunk_size(chunk_size)
    net = _plain_model(model)
    inputs, targets = split_lm_batch(batch, "chunked_lm_loss")
    rows, y = _counted_rows(targets, net.out_head.out_features)  # before any model work
    hidden = net.hidden_states(inputs)  # (B, T, C), after the final norm
    return _mean_loss(hidden, net.out_head.weight, net.out_head.bias, targets, rows, y, chunk_size)
