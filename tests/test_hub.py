"""Push to and load from a Hub (the local Hub-protocol server of tests/hub_server.py).

Clients run in subprocesses (see tests/hub_clients.py); the server's storage is inspected and
tampered with directly from the test process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from hub_clients import MARKER
from hub_server import LocalHub, run_client
from safetensors.torch import load, save

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
REPO = "user/tiny-dendrites"


def client(hub: LocalHub, call: str, timeout: float = 240) -> dict:
    return client_code(hub, f"import hub_clients; hub_clients.{call}", timeout)


def client_code(hub: LocalHub, code: str, timeout: float = 240) -> dict:
    proc = run_client(code, hub.endpoint_env(), timeout=timeout, cwd=TESTS)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    # anything else on stdout (an interactive prompt above all) is a failure too
    assert len(lines) == 1 and not proc.stdout.replace(lines[0], "").strip(), (
        f"expected one result line\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    )
    return json.loads(lines[0][len(MARKER) :])


@pytest.fixture(scope="module")
def hub(_local_hub_session: LocalHub, tmp_path_factory: pytest.TempPathFactory):
    """One server state for the module: the tiny model is pushed once and read by several tests."""
    _local_hub_session.reset(hf_home=tmp_path_factory.mktemp("hf_home"))
    yield _local_hub_session
    _local_hub_session.reset()


@pytest.fixture(scope="module")
def pushed(hub: LocalHub, tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("push")
    return client(hub, f"push_tiny({REPO!r}, {str(workdir)!r})")


def test_push_then_load_with_the_library_gives_identical_logits(hub, pushed):
    assert pushed["dendrites"] == 1
    assert torch.equal(torch.tensor(pushed["loaded_logits"]), torch.tensor(pushed["logits"]))
    files = set(hub.list_files(REPO))
    expected = {
        "config.json",
        "model.safetensors",
        "README.md",
        "results.json",
        "modeling_hf_dendrites.py",
        "dendrite_modeling.py",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert expected <= files
    assert not {name for name in files if name.endswith((".bin", ".pt", ".pkl", ".pth"))}, "only safetensors"
    config = json.loads(hub.read_file(REPO, "config.json"))
    assert config["model_type"] == "hf_dendrites"
    assert config["auto_map"]["AutoModelForSequenceClassification"].startswith("modeling_hf_dendrites.")


def test_load_without_hf_dendrites_through_remote_code_gives_identical_logits(hub, pushed):
    result = client(hub, f"load_without_library({REPO!r})")
    assert result["hf_dendrites_imported"] is False
    assert result["model_class"] == "HfDendritesBertForSequenceClassification"
    assert torch.equal(torch.tensor(result["logits"]), torch.tensor(pushed["logits"]))


def test_model_card_metadata_parses_and_holds_the_results(hub, pushed):
    from huggingface_hub import ModelCard

    text = hub.read_file(REPO, "README.md").decode()
    front_matter = yaml.safe_load(text.split("---")[1])
    assert front_matter["library_name"] == "hf_dendrites"
    assert front_matter["base_model"] == "google-bert/bert-base-uncased"
    assert front_matter["datasets"] == ["CogComp/trec"]
    assert {"dendrites", "perforated-backpropagation"} <= set(front_matter["tags"])
    card = ModelCard(text)
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[("test", "accuracy")] == pytest.approx(pushed["results"]["test"]["accuracy"])
    assert results[("validation", "f1")] == pytest.approx(pushed["results"]["validation"]["macro_f1"])
    parameters = pushed["results"]["parameters"]
    assert f"| total | {parameters['total']:,} |" in text
    assert f"| dendrites | {parameters['dendrites']:,} |" in text
    assert 'from_pretrained("user/tiny-dendrites")' in text and "trust_remote_code=True" in text
    assert "| `bert.encoder.layer.0.attention.self.query` | 1 |" in text


def test_pushing_twice_updates_the_repo_and_old_revisions_stay_loadable(hub, tmp_path):
    repo = "user/grows"
    first = client(hub, f"push_tiny({repo!r}, {str(tmp_path / 'a')!r}, dendrites=1)")
    second = client(hub, f"push_tiny({repo!r}, {str(tmp_path / 'b')!r}, dendrites=2, seed=1)")
    assert hub.commits(repo)[:2] == [second["commit"], first["commit"]]
    latest = client(hub, f"load_with_library({repo!r}, {str(tmp_path)!r})")
    assert latest["dendrites"] == 2
    assert torch.equal(torch.tensor(latest["logits"]), torch.tensor(second["logits"]))
    old = client(hub, f"load_with_library({repo!r}, {str(tmp_path)!r}, revision={first['commit']!r})")
    assert old["dendrites"] == 1
    assert torch.equal(torch.tensor(old["logits"]), torch.tensor(first["logits"]))


def _tamper(hub: LocalHub, repo: str, change) -> None:
    tensors = load(hub.read_file(repo, "model.safetensors"))
    change(tensors)
    hub.write_file(repo, "model.safetensors", save(tensors))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.update({k: v[..., :-1].clone() for k, v in t.items() if k.endswith("dendrite_weight")}), "shape"),
        (lambda t: [t.pop(k) for k in [k for k in t if k.endswith("dendrite_scale")][:1]], "missing tensors"),
    ],
    ids=["wrong-shape", "missing-tensor"],
)
def test_a_tampered_repo_fails_loudly(hub, tmp_path, change, message):
    repo = f"user/tampered-{message.split()[0]}"
    client(hub, f"push_tiny({repo!r}, {str(tmp_path)!r})")
    _tamper(hub, repo, change)
    result = client(hub, f"load_with_library({repo!r}, {str(tmp_path)!r})")
    assert "error" in result, result
    assert "do not match the recorded dendrite structure" in result["error"] and message in result["error"]


def test_a_truncated_weights_file_fails_loudly(hub, tmp_path):
    repo = "user/truncated"
    client(hub, f"push_tiny({repo!r}, {str(tmp_path)!r})")
    data = hub.read_file(repo, "model.safetensors")
    hub.write_file(repo, "model.safetensors", data[: len(data) // 2])
    result = client(hub, f"load_with_library({repo!r}, {str(tmp_path)!r})")
    assert "error" in result and "model.safetensors" in result["error"], result


def test_train_script_push_to_hub_end_to_end(hub, tmp_path):
    repo = "user/trec6-tiny"
    code = f"""
        import sys
        sys.argv = ["train.py", {str(ROOT / "configs" / "trec6.yaml")!r}, "--output_dir", {str(tmp_path)!r},
                    "--max_train_samples", "64", "--max_eval_samples", "32", "--max_test_samples", "32",
                    "--max_seq_length", "32", "--num_train_epochs", "1", "--save_strategy", "no",
                    "--push_to_hub", "--hub_model_id", {repo!r}]
        sys.path.insert(0, {str(ROOT / "scripts")!r})
        import train
        train.main()
    """
    run_client(code, hub.endpoint_env(), timeout=400, cwd=TESTS)
    files = set(hub.list_files(repo))
    assert {"config.json", "model.safetensors", "README.md", "results.json", "dendrite_history.png"} <= files
    assert {"modeling_hf_dendrites.py", "tokenizer.json"} <= files
    results = json.loads(hub.read_file(repo, "results.json"))
    card = hub.read_file(repo, "README.md").decode()
    assert "sentence-transformers/all-MiniLM-L6-v2" in card.split("---")[1]
    assert f"{results['test']['accuracy']:.4f}" in card
    config = json.loads(hub.read_file(repo, "config.json"))
    assert config["dendrites"]["base_model_type"] == "bert"
    assert len(hub.commits(repo)) >= 1


def test_push_rejects_a_model_without_dendrites_and_a_bad_repo_id():
    from tiny_models import tiny_model

    import hf_dendrites as hd
    from hf_dendrites.hub import push_to_hub

    with pytest.raises(ValueError, match="add_dendrites"):
        push_to_hub(tiny_model(), "user/plain")
    model = hd.add_dendrites(tiny_model(), hd.DendriteConfig())
    with pytest.raises(ValueError, match="not a Hub repo id"):
        model.push_to_hub("not a/valid/repo")


@pytest.mark.parametrize(
    ("family", "model_class"),
    [
        ("summing_network", "HfDendritesSummingNetworkForSequenceClassification"),
        ("narrowed_bert", "HfDendritesBertForSequenceClassification"),
    ],
)
def test_compressed_models_push_and_load_both_ways(hub, tmp_path, family, model_class):
    repo = f"user/tiny-{family.replace('_', '-')}"
    pushed = client(hub, f"push_tiny({repo!r}, {str(tmp_path)!r}, family={family!r})")
    assert torch.equal(torch.tensor(pushed["loaded_logits"]), torch.tensor(pushed["logits"]))
    remote = client(hub, f"load_without_library({repo!r})")
    assert remote["hf_dendrites_imported"] is False and remote["model_class"] == model_class
    assert torch.equal(torch.tensor(remote["logits"]), torch.tensor(pushed["logits"]))
    card = hub.read_file(repo, "README.md").decode()
    total = pushed["results"]["parameters"]["total"]
    reference = pushed["results"]["compression"]["reference"]["parameters"]
    assert f"| reference model (tiny BERT) | {reference:,} (this model: {100 * total / reference:.1f}% of it) |" in card
    if family == "summing_network":
        assert "modeling_summing.py" in set(hub.list_files(repo))
        assert "a summing network built from it" in card


def test_a_masked_lm_model_pushes_with_a_fill_mask_card_and_loads_both_ways(hub, tmp_path):
    repo = "user/tiny-mlm-dendrites"
    pushed = client(hub, f"push_masked_lm({repo!r}, {str(tmp_path)!r})")
    assert pushed["same_logits"] and pushed["dendrites"] == 1 and pushed["model_class"] == "BertForMaskedLM"
    assert len(pushed["filled"]) == 5 and all(0 <= score <= 1 for score in pushed["scores"])  # the pipeline ran
    remote = client(hub, f"load_masked_lm_without_library({repo!r})")
    assert remote["model_class"] == "HfDendritesBertForMaskedLM"
    assert torch.equal(torch.tensor(remote["logits"]), torch.tensor(pushed["logits"]))
    config = json.loads(hub.read_file(repo, "config.json"))
    assert config["auto_map"]["AutoModelForMaskedLM"].startswith("modeling_hf_dendrites.")
    text = hub.read_file(repo, "README.md").decode()
    front_matter = yaml.safe_load(text.split("---")[1])
    assert front_matter["pipeline_tag"] == "fill-mask" and "fill-mask" in front_matter["tags"]
    assert "AutoModelForMaskedLM.from_pretrained" in text and "perplexity" in text


def test_a_lora_adapter_with_dendrites_pushes_alone_and_loads_back_onto_its_base(hub):
    repo = "user/tiny-lora-dendrites"
    result = client(hub, f"push_lora({repo!r})")
    assert result["loaded_class"].startswith("Peft") and result["dendrites"] == 1
    assert torch.equal(torch.tensor(result["loaded_logits"]), torch.tensor(result["logits"]))
    files = set(hub.list_files(repo))
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "dendrites.safetensors",
        "dendrite_config.json",
    } <= files
    assert "model.safetensors" not in files  # the base model is not uploaded
    card = hub.read_file(repo, "README.md").decode()
    front_matter = yaml.safe_load(card.split("---")[1])
    assert {"peft", "lora", "dendrites"} <= set(front_matter["tags"])
    assert "LORA adapter (rank 4, alpha 8, on `query`, `value`) with" in card
    assert "PeftModel.from_pretrained` refuses this adapter" in card


def test_a_repo_whose_config_was_edited_is_refused_by_the_library_and_by_the_remote_code(hub, tmp_path):
    repo = "user/edited-activation"
    client(hub, f"push_tiny({repo!r}, {str(tmp_path)!r})")
    config = json.loads(hub.read_file(repo, "config.json"))
    config["dendrites"]["config"]["activation"] = "tanh"  # the weights were trained with sigmoid dendrites
    hub.write_file(repo, "config.json", json.dumps(config).encode())
    message = "activation: config.json says 'tanh', the weights were saved with 'sigmoid'"
    library = client(hub, f"load_with_library({repo!r}, {str(tmp_path)!r})")
    assert message in library.get("error", ""), library
    remote = client_code(
        hub,
        f"""
        import sys
        import hub_clients
        try:
            hub_clients.load_without_library({repo!r})
        except ValueError as error:
            imported = any(name.startswith("hf_dendrites") for name in sys.modules)
            hub_clients.report(error=str(error), hf_dendrites_imported=imported)
        """,
    )
    assert remote["hf_dendrites_imported"] is False and message in remote.get("error", ""), remote
