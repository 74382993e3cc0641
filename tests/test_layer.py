"""DendriteLinear: forward, gradients in PB and GD modes, growth, candidates on a synthetic task."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_dendrites.correlation import BatchMoments, CorrelationStats, capture_error
from hf_dendrites.layer import CandidateRows, DendriteLinear


def make_layer(
    mode: str = "pb", cascade: bool = False, in_features: int = 6, out_features: int = 5, dtype=torch.float32
):
    torch.manual_seed(0)
    return DendriteLinear(nn.Linear(in_features, out_features, dtype=dtype), mode=mode, cascade=cascade)


def train_candidates(layer: DendriteLinear, x: torch.Tensor, loss_fn, steps: int = 5, lr: float = 1e-2) -> list[float]:
    """Dendrite-phase steps on one batch; returns the candidate score of each step's window."""
    layer.train()
    optimizer = torch.optim.Adam([p for n, p in layer.named_parameters() if n.startswith("candidate_")], lr=lr)
    scores = []
    for _ in range(steps):
        layer.candidate_stats.reset()
        loss_fn(layer(x)).backward()
        optimizer.step()
        optimizer.zero_grad()
        scores.append(layer.candidate_score())
    return scores


@pytest.mark.parametrize("mode", ["pb", "gd"])
@pytest.mark.parametrize("cascade", [False, True])
def test_no_dendrites_is_exactly_the_base_layer_and_growth_keeps_outputs(mode, cascade):
    layer = make_layer(mode, cascade)
    x = torch.randn(3, 4, 6)
    expected = layer.base_layer(x)
    assert torch.equal(layer(x), expected)
    for _ in range(3):
        if mode == "pb":
            layer.start_candidates(2)
            train_candidates(layer, x, lambda y: y.pow(2).sum(), steps=1)
        layer.grow()
        assert torch.equal(layer(x), expected)
    assert layer.num_dendrites == 3
    assert layer.dendrite_weight.shape == (3, 5, 6)


@pytest.mark.parametrize("shape", [(6,), (2, 6), (2, 3, 6), (2, 2, 3, 6)])
def test_any_number_of_leading_dimensions(shape):
    layer = make_layer("gd")
    layer.grow()
    with torch.no_grad():
        layer.dendrite_scale.fill_(0.5)
    x = torch.randn(*shape)
    flat = layer(x.reshape(-1, 6)).reshape(*shape[:-1], 5)
    assert layer(x).shape == (*shape[:-1], 5)
    assert torch.allclose(layer(x), flat, atol=1e-6)


def test_dendrite_formula():
    layer = make_layer("gd", cascade=True)
    layer.grow()
    layer.grow()
    with torch.no_grad():
        layer.dendrite_scale.uniform_(-1, 1)
        layer.dendrite_cascade.uniform_(-1, 1)
    x = torch.randn(7, 6)
    d0 = torch.sigmoid(x @ layer.dendrite_weight[0].T + layer.dendrite_bias[0])
    d1 = torch.sigmoid(x @ layer.dendrite_weight[1].T + layer.dendrite_bias[1] + layer.dendrite_cascade[1, 0] * d0)
    expected = layer.base_layer(x) + layer.dendrite_scale[0] * d0 + layer.dendrite_scale[1] * d1
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_pb_dendrite_passes_no_gradient_upstream_and_keeps_input_weights_frozen():
    layer = make_layer("pb")
    x = torch.randn(8, 6)
    layer.start_candidates(3)
    train_candidates(layer, x, lambda y: y.pow(2).sum(), steps=1)
    layer.grow()
    with torch.no_grad():
        layer.dendrite_scale.fill_(0.7)  # a trained output weight: the dendrite now matters
    assert not layer.dendrite_weight.requires_grad and not layer.dendrite_bias.requires_grad
    assert layer.dendrite_scale.requires_grad
    inputs = x.clone().requires_grad_(True)
    grad_out = torch.randn(8, 5)
    layer(inputs).backward(grad_out)
    assert torch.allclose(inputs.grad, grad_out @ layer.base_layer.weight, atol=1e-6)
    assert layer.dendrite_weight.grad is None and layer.dendrite_bias.grad is None
    assert layer.dendrite_scale.grad is not None and layer.dendrite_scale.grad.abs().sum() > 0


def test_gd_dendrite_trains_jointly_and_passes_gradient_upstream():
    layer = make_layer("gd")
    layer.grow()
    with torch.no_grad():
        layer.dendrite_scale.fill_(0.7)
    inputs = torch.randn(8, 6, requires_grad=True)
    grad_out = torch.randn(8, 5)
    layer(inputs).backward(grad_out)
    assert layer.dendrite_weight.requires_grad and layer.dendrite_weight.grad.abs().sum() > 0
    assert not torch.allclose(inputs.grad, grad_out @ layer.base_layer.weight, atol=1e-6)


def test_dtype_follows_the_base_layer():
    layer = make_layer("gd", dtype=torch.float64)
    layer.grow()
    layer.start_candidates(2)
    assert layer.dendrite_weight.dtype == torch.float64 and layer.candidate_weight.dtype == torch.float64
    assert layer(torch.randn(2, 6, dtype=torch.float64)).dtype == torch.float64


def batch_correlation(values: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """The candidate objective written plainly (autograd differentiates it): the reference that the
    streaming statistics and the closed-form gradient of `capture_error` are checked against."""
    v = values - values.mean(dim=0, keepdim=True)
    e = (error - error.mean(dim=0, keepdim=True)).unsqueeze(1)
    return (v * e).mean(dim=0) / (v.pow(2).mean(dim=0) * e.pow(2).mean(dim=0)).sqrt()


def test_batch_correlation_matches_a_direct_computation():
    torch.manual_seed(0)
    values, error = torch.randn(50, 3, 4), torch.randn(50, 4)
    expected = torch.empty(3, 4)
    for c in range(3):
        for o in range(4):
            expected[c, o] = torch.corrcoef(torch.stack([values[:, c, o], error[:, o]]))[0, 1]
    assert torch.allclose(batch_correlation(values, error), expected, atol=1e-5)
    stats = CorrelationStats(3, 4)
    stats.add_moments(BatchMoments.of(values[:20], error[:20]))
    stats.add_moments(BatchMoments.of(values[20:], error[20:]))
    assert torch.allclose(stats.correlation().float(), expected, atol=1e-5)


def test_capture_error_is_identity_forward_and_gives_candidates_the_correlation_gradient():
    torch.manual_seed(0)
    output = torch.randn(30, 4, requires_grad=True)
    values = torch.randn(30, 2, 4, requires_grad=True)
    captured = capture_error(output, values)
    assert torch.equal(captured, output)
    error = torch.randn(30, 4)
    captured.backward(error)
    assert torch.equal(output.grad, error)
    leaf = values.detach().requires_grad_(True)
    (-batch_correlation(leaf, error).abs().sum()).backward()
    assert torch.allclose(values.grad, leaf.grad, atol=1e-6)


def test_capture_error_ignores_rows_without_error_and_still_counts_statistics_exactly():
    torch.manual_seed(1)
    output = torch.randn(40, 4, requires_grad=True)
    values = torch.randn(40, 3, 4, requires_grad=True)
    stats = CorrelationStats(3, 4)
    error = torch.randn(40, 4)
    error[::3] = 0.0  # e.g. padding: the loss never sees these positions
    capture_error(output, values, stats).backward(error)
    rows = error.ne(0).any(dim=-1)
    leaf = values.detach()[rows].requires_grad_(True)
    (-batch_correlation(leaf, error[rows]).abs().sum()).backward()
    assert torch.allclose(values.grad[rows], leaf.grad, atol=1e-6)
    assert torch.equal(values.grad[~rows], torch.zeros_like(values.grad[~rows]))
    assert float(stats.count) == int(rows.sum())
    assert torch.allclose(stats.correlation().float(), batch_correlation(values.detach()[rows], error[rows]), atol=1e-5)


def synthetic_regression(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets whose residual after the best linear fit is a non-linear function of the inputs.

    Each output neuron hides one sharp sigmoid of a linear form of the inputs: exactly what one
    dendrite can represent and a linear layer cannot.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    hidden0 = torch.sigmoid(6.0 * (x[:, 0] - 1.0))
    hidden1 = torch.sigmoid(6.0 * (x[:, 1] + x[:, 2] - 1.0))
    return x, torch.stack([x[:, 4] + 3.0 * hidden0, x[:, 5] - 2.0 * hidden1], dim=1)


def fitted_layer(x: torch.Tensor, target: torch.Tensor) -> DendriteLinear:
    """A layer whose base weights are the least-squares fit: what is left is the non-linear part."""
    torch.manual_seed(0)
    base = nn.Linear(6, 2)
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    solution = torch.linalg.lstsq(design, target).solution
    with torch.no_grad():
        base.weight.copy_(solution[:6].T)
        base.bias.copy_(solution[6])
    return DendriteLinear(base, mode="pb")


def neuron_phase_loss(layer: DendriteLinear, x: torch.Tensor, target: torch.Tensor, steps: int = 60) -> float:
    optimizer = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=0.05)
    for _ in range(steps):
        loss = nn.functional.mse_loss(layer(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(nn.functional.mse_loss(layer(x), target))


def test_candidates_learn_a_nonlinear_error_and_the_grown_dendrite_lowers_the_loss():
    x, target = synthetic_regression()
    layer = fitted_layer(x, target)
    layer.start_candidates(4, generator=torch.Generator().manual_seed(1))
    scores = train_candidates(layer, x, lambda y: nn.functional.mse_loss(y, target), steps=150, lr=0.1)
    assert scores[-1] > scores[0] + 0.3, scores[::30]
    assert scores[-1] > 0.5

    layer.grow()
    assert layer.num_dendrites == 1
    with_dendrite = neuron_phase_loss(layer, x, target)
    without_dendrite = neuron_phase_loss(fitted_layer(x, target), x, target)
    assert with_dendrite < 0.5 * without_dendrite, (with_dendrite, without_dendrite)


def test_candidate_training_does_not_change_the_outputs():
    x, target = synthetic_regression(64)
    layer = fitted_layer(x, target)
    layer.eval()
    before = layer(x).detach().clone()
    layer.start_candidates(3)
    layer.train()
    during = layer(x)
    assert torch.equal(during, before)
    train_candidates(layer, x, lambda y: nn.functional.mse_loss(y, target), steps=5)
    layer.eval()
    assert torch.equal(layer(x), before)


def test_grow_in_pb_mode_without_candidates_raises_and_changes_nothing():
    layer = make_layer("pb")
    with pytest.raises(RuntimeError, match="candidates"):
        layer.grow()
    layer.start_candidates(2)
    with pytest.raises(RuntimeError, match="candidates"):
        layer.grow()  # started but never trained
    assert layer.num_dendrites == 0


def candidate_gradients(layer: DendriteLinear, x: torch.Tensor, weight: torch.Tensor) -> list[torch.Tensor]:
    layer.zero_grad(set_to_none=True)
    layer.candidate_stats.reset()
    (layer(x) * weight).sum().backward()
    return [layer.candidate_weight.grad.clone(), layer.candidate_bias.grad.clone()]


@pytest.mark.parametrize("cascade", [False, True])
def test_a_layer_whose_error_reaches_only_the_first_position_trains_candidates_there_alone(cascade):
    layer = make_layer(cascade=cascade)
    if cascade:
        layer.start_candidates(2)
        train_candidates(layer, torch.randn(4, 7, 6), lambda y: y.pow(2).sum(), steps=1)
        layer.grow()
    layer.start_candidates(3)
    x = torch.randn(4, 7, 6)
    cls_only = torch.zeros(4, 7, 5)
    cls_only[:, 0] = torch.randn(4, 5)  # what a [CLS]-reading head sends back after the last attention
    full = candidate_gradients(layer, x, cls_only)  # first step: every position computed
    assert layer.candidate_rows.first_position_only
    full_count = float(layer.candidate_stats.count)
    restricted = candidate_gradients(layer, x, cls_only)  # second step: the first position alone
    assert float(layer.candidate_stats.count) == full_count == 4
    for a, b in zip(full, restricted):
        assert torch.allclose(a, b, atol=1e-6)
    everywhere = torch.randn(4, 7, 5)
    candidate_gradients(layer, x, everywhere)  # the other positions get an error again: noticed
    assert not layer.candidate_rows.first_position_only
    candidate_gradients(layer, x, everywhere)
    assert float(layer.candidate_stats.count) == 28


def test_a_token_fraction_trains_candidates_on_a_fresh_subset_and_changes_no_output():
    layer = DendriteLinear(nn.Linear(6, 5), candidate_token_fraction=0.25)
    layer.start_candidates(2)
    x = torch.randn(8, 10, 6)
    expected = layer.base_layer(x)
    seen = []
    for _ in range(2):
        layer.zero_grad(set_to_none=True)
        layer.candidate_stats.reset()
        output = layer(x)
        assert torch.equal(output, expected)
        output.pow(2).sum().backward()
        assert float(layer.candidate_stats.count) == 20  # a quarter of the 80 positions
        seen.append(layer.candidate_stats.sum_v.clone())
    assert not torch.equal(seen[0], seen[1])  # another subset each step
    assert layer.candidate_weight.grad.abs().sum() > 0

    # and those steps train them: scored on every position, the candidates correlate better with the
    # error after ten steps on quarter subsets than before (measured 0.335 -> 0.491)
    every_position = DendriteLinear(nn.Linear(6, 5), candidate_token_fraction=1.0)
    every_position.start_candidates(2)

    def score_on_every_position() -> float:
        every_position.load_state_dict(layer.state_dict())
        every_position.candidate_stats.reset()
        every_position(x).pow(2).sum().backward()
        return every_position.candidate_score()

    before = score_on_every_position()
    train_candidates(layer, x, lambda y: y.pow(2).sum(), steps=10)
    assert score_on_every_position() > before + 0.05


def test_a_token_fraction_samples_among_the_real_tokens_only():
    rows = CandidateRows(0.5)
    positions = torch.tensor([0, 1, 2, 5, 6, 9, 10, 11])  # 8 real tokens of a [3, 4] batch
    rows.set_token_positions(positions, 12)
    torch.manual_seed(0)
    chosen = rows.select(torch.Size([3, 4, 7]), torch.device("cpu"))
    assert chosen.numel() == 4
    assert set(chosen.tolist()) <= set(positions.tolist())
    assert chosen.tolist() == sorted(chosen.tolist())
    # positions recorded for another batch shape are ignored rather than misapplied
    assert rows.select(torch.Size([2, 4, 7]), torch.device("cpu")).numel() == 4
    rows.fraction = 1.0
    assert torch.equal(rows.select(torch.Size([3, 4, 7]), torch.device("cpu")), positions)


def test_first_positions_only_whatever_the_error():
    rows = CandidateRows(positions="first")
    rows.set_token_positions(torch.tensor([0, 1, 2, 5, 6, 9, 10, 11]), 12)
    rows.observe(torch.ones(3, 4, 7))  # every position gets an error: still the first ones
    assert rows.select(torch.Size([3, 4, 7]), torch.device("cpu")).tolist() == [0, 4, 8]
    assert rows.select(torch.Size([3, 7]), torch.device("cpu")) is None  # one row per example: all rows
    with pytest.raises(ValueError, match="candidate_positions must be one of"):
        CandidateRows(positions="cls")


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_a_token_fraction_outside_zero_to_one_is_refused(fraction):
    with pytest.raises(ValueError, match="candidate_token_fraction"):
        DendriteLinear(nn.Linear(6, 5), candidate_token_fraction=fraction)
    from hf_dendrites import DendriteTrainingArguments

    with pytest.raises(ValueError, match="candidate_token_fraction"):
        DendriteTrainingArguments(candidate_token_fraction=fraction)
