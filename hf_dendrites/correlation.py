"""The candidate objective: correlation between a candidate dendrite and its neuron's error.

Cascade-correlation done per neuron. For candidate `c` of neuron `o`, over the samples `p` of a
batch (every leading position of the layer output), the score is

    |sum_p (V_pco - mean V_co)(E_po - mean E_o)| / (N * std V_co * std E_o)

where `E = dLoss/dy` is the neuron error. Normalising to a correlation keeps the score in [0, 1]
and comparable across layers, whatever the scale of their gradients.

`E` only exists during the backward pass, so the objective is applied there:
`capture_error(y, v, stats)` returns `y` unchanged in the forward pass and, in the backward pass,
sends `E` on untouched while handing `v` the gradient of the (negated) correlation. One ordinary
backward of the task loss therefore both captures the error at every layer and trains every
candidate, and the model's predictions never depend on a candidate.
"""

from __future__ import annotations

from typing import Protocol

import torch


def active_rows(error: torch.Tensor) -> torch.Tensor:
    """Mask of samples whose error is not identically zero.

    Positions the loss never sees (padding, or every token but [CLS] after the last layer a
    classifier reads) carry an exactly-zero error; counting them would drown the signal.
    """
    return error.ne(0).any(dim=-1)


def _joint_std(var_v: torch.Tensor, var_e: torch.Tensor) -> torch.Tensor:
    """sqrt(var_v * var_e), kept away from zero without an absolute epsilon.

    Neuron errors can be as small as 1e-7 (attention projections early in training); an
    additive epsilon would swamp them and read as zero correlation.
    """
    return (var_v * var_e).clamp_min(torch.finfo(var_v.dtype).tiny).sqrt()


# A variance below this share of the squared mean is rounding, not variation (float32 values that
# are all equal leave a centred sum of squares near 1e-14 of their square).
FLAT_VARIANCE = 1e-10


def is_flat(variance: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Where a quantity does not vary over the rows (its variance is zero or rounding)."""
    return variance <= FLAT_VARIANCE * mean.pow(2) + torch.finfo(variance.dtype).tiny


def guarded_correlation(
    covariance: torch.Tensor, var_v: torch.Tensor, var_e: torch.Tensor, mean_v: torch.Tensor, mean_e: torch.Tensor
) -> torch.Tensor:
    """covariance / sqrt(var_v var_e), and 0 where either side does not vary.

    Without the guard a constant candidate (a layer whose input is the same in every row) divides
    rounding noise by rounding noise and scores up to 1e+133.
    """
    r = covariance / _joint_std(var_v, var_e)
    flat = is_flat(var_v, mean_v) | is_flat(var_e, mean_e)
    return torch.where(flat, torch.zeros_like(r), r.clamp(-1.0, 1.0))


class BatchMoments:
    """Centred first and second moments of one batch: all the correlation and its gradient need.

    Computed once per batch in the working dtype; centring first keeps float32 sums accurate.
    """

    def __init__(self, values: torch.Tensor, error: torch.Tensor) -> None:
        self.count = values.shape[0]
        self.mean_v = values.mean(dim=0)
        self.mean_e = error.mean(dim=0)
        self.centred_v = values - self.mean_v
        self.centred_e = error - self.mean_e
        self.centred_vv = self.centred_v.pow(2).sum(dim=0)
        self.centred_ee = self.centred_e.pow(2).sum(dim=0)
        self.centred_ve = (self.centred_v * self.centred_e.unsqueeze(1)).sum(dim=0)

    @classmethod
    def of(cls, values: torch.Tensor, error: torch.Tensor) -> BatchMoments:
        return cls(values, error.to(values.dtype))

    def correlation(self) -> torch.Tensor:
        """Signed correlation `[C, out]` (0 where the candidate or the error does not vary)."""
        n = self.count
        return guarded_correlation(
            self.centred_ve / n, self.centred_vv / n, self.centred_ee / n, self.mean_v, self.mean_e
        )

    def candidate_gradient(self) -> torch.Tensor:
        """Gradient `[N, C, out]` of the negated sum of absolute correlations, in closed form.

        For r = S_ve / sqrt(S_vv S_ee) (centred sums), d|r|/dv_p = sign(r) (e_p - mean e) /
        sqrt(S_vv S_ee) - |r| (v_p - mean v) / S_vv; the mean terms cancel because centred values
        sum to zero. Two fused passes over `[N, C, out]` instead of autograd through a dozen.
        Overwrites `centred_v`, which is not needed afterwards.
        """
        r = self.correlation()
        beta = r.abs() / self.centred_vv.clamp_min(torch.finfo(r.dtype).tiny)
        alpha = -torch.sign(r) / _joint_std(self.centred_vv, self.centred_ee)
        return self.centred_v.mul_(beta).addcmul_(self.centred_e.unsqueeze(1), alpha)


class CorrelationStats:
    """Running sums over many batches, giving the correlation of a whole evaluation window.

    Float64 sums, so a window of many thousands of tokens loses no precision. The sums can be
    added across processes (`tensors()`/`load_tensors()`) so every rank reads the same score.
    """

    def __init__(self, num_candidates: int, out_features: int, device: torch.device | None = None) -> None:
        shape = (num_candidates, out_features)
        kwargs = {"dtype": torch.float64, "device": device}
        # Batches left out because their error or candidate outputs were not finite (a NaN batch
        # would otherwise poison the sums and, through the gradient, the candidate weights).
        self.skipped_batches = 0
        self.count = torch.zeros((), **kwargs)
        self.sum_v = torch.zeros(shape, **kwargs)
        self.sum_vv = torch.zeros(shape, **kwargs)
        self.sum_ve = torch.zeros(shape, **kwargs)
        self.sum_e = torch.zeros(out_features, **kwargs)
        self.sum_ee = torch.zeros(out_features, **kwargs)

    _FIELDS = ("count", "sum_v", "sum_vv", "sum_ve", "sum_e", "sum_ee")

    @torch.no_grad()
    def add_moments(self, moments: BatchMoments) -> None:
        """Add a batch summarised by its centred moments (exact: raw sums are rebuilt in float64)."""
        n = float(moments.count)
        mean_v, mean_e = moments.mean_v.double(), moments.mean_e.double()
        self.count += n
        self.sum_v += n * mean_v
        self.sum_vv += moments.centred_vv.double() + n * mean_v.pow(2)
        self.sum_ve += moments.centred_ve.double() + n * mean_v * mean_e
        self.sum_e += n * mean_e
        self.sum_ee += moments.centred_ee.double() + n * mean_e.pow(2)

    def correlation(self) -> torch.Tensor:
        """Signed correlation `[C, out]` over everything added since the last reset."""
        n = self.count.clamp_min(1)
        mean_v = self.sum_v / n
        mean_e = self.sum_e / n
        covariance = self.sum_ve / n - mean_v * mean_e
        var_v = (self.sum_vv / n - mean_v.pow(2)).clamp_min(0)
        var_e = (self.sum_ee / n - mean_e.pow(2)).clamp_min(0)
        return guarded_correlation(covariance, var_v, var_e, mean_v, mean_e)

    def best_per_neuron(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(index of the best candidate `[out]`, its absolute correlation `[out]`)."""
        scores, index = self.correlation().abs().max(dim=0)
        return index, scores

    def score(self) -> float:
        """Mean over neurons of the best candidate's absolute correlation."""
        return float(self.best_per_neuron()[1].mean())

    def reset(self) -> None:
        for name in self._FIELDS:
            getattr(self, name).zero_()
        self.skipped_batches = 0

    def tensors(self) -> list[torch.Tensor]:
        """The raw sums, in a fixed order, for saving or summing across processes."""
        return [getattr(self, name) for name in self._FIELDS]

    def load_tensors(self, tensors: list[torch.Tensor]) -> None:
        for name, value in zip(self._FIELDS, tensors, strict=True):
            getattr(self, name).copy_(value)


class _CaptureError(torch.autograd.Function):
    """Identity on `y`; in backward, turns the error reaching `y` into a gradient for `v`."""

    @staticmethod
    def forward(ctx, output, values, stats, rows, observer, skip):  # type: ignore[override]
        ctx.save_for_backward(values, rows)
        ctx.stats = stats
        ctx.observer = observer
        ctx.skip = skip
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        values, sampled = ctx.saved_tensors
        if ctx.observer is not None:
            ctx.observer.observe(grad_output)
        out_features = grad_output.shape[-1]
        error = grad_output.reshape(-1, out_features)
        if sampled is not None:
            error = error.index_select(0, sampled)
        flat_values = values.reshape(error.shape[0], -1, out_features)
        gradient = correlation_gradient(flat_values, error, ctx.stats, skip=ctx.skip)
        return grad_output, gradient.view_as(values), None, None, None, None


def correlation_gradient(
    values: torch.Tensor, error: torch.Tensor, stats: CorrelationStats | None = None, *, skip: bool = False
) -> torch.Tensor:
    """Gradient `[N, C, out]` that raises the candidates' correlation with `error` `[N, out]`, and
    the batch added to `stats`.

    Rows whose error is all zero are left out (see `active_rows`). A batch marked `skip`, or whose
    error or values are not finite, trains nothing (zero gradient) and is counted as skipped.
    """
    if skip or not (bool(torch.isfinite(error).all()) and bool(torch.isfinite(values).all())):
        if stats is not None:
            stats.skipped_batches += 1
        return torch.zeros_like(values)
    rows = active_rows(error)
    active = int(rows.sum())
    if active < 2:
        return torch.zeros_like(values)
    everything = active == error.shape[0]
    active_values = values if everything else values[rows]
    moments = BatchMoments.of(active_values.detach(), error if everything else error[rows])
    if stats is not None:
        stats.add_moments(moments)
    direction = moments.candidate_gradient()
    if everything:
        return direction
    gradient = torch.zeros_like(values)
    gradient[rows] = direction
    return gradient


class ErrorObserver(Protocol):
    def observe(self, error: torch.Tensor) -> None: ...


def capture_error(
    output: torch.Tensor,
    values: torch.Tensor,
    stats: CorrelationStats | None = None,
    *,
    rows: torch.Tensor | None = None,
    observer: ErrorObserver | None = None,
    skip: bool = False,
) -> torch.Tensor:
    """Return `output` unchanged, training `values` to correlate with the error reaching it.

    output: `[..., out]` a layer output; values: `[..., C, out]` candidate outputs with a graph
    to the candidate weights, or `[len(rows), C, out]` for the given rows of the flattened
    output. The candidate loss is the negated sum of absolute correlations, so an optimizer step
    on the candidate weights raises every candidate's score. `observer.observe` sees the whole
    error of every backward pass. A batch whose error or candidate outputs are not finite, or
    one marked `skip`, trains nothing and is counted in `stats.skipped_batches`.
    """
    return _CaptureError.apply(output, values, stats, rows, observer, skip)
