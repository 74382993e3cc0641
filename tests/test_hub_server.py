"""Proves the real ``huggingface_hub``/``transformers`` clients work against the local Hub server.

Client code runs in a subprocess (``huggingface_hub`` freezes ``HF_ENDPOINT`` at import time); it asserts
what it can see and prints one JSON line after a marker, which the test then checks against the
server's storage.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hub_server import ClientError, LocalHub, git_blob_oid, run_client

MARKER = "RESULT_JSON:"


def _result(hub: LocalHub, code: str) -> dict[str, Any]:
    """Run client ``code`` against ``hub`` and return the dict it printed after ``MARKER``."""
    proc = run_client(code, hub.endpoint_env(), timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert len(lines) == 1, f"no result line\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    return json.loads(lines[0][len(MARKER) :])


def test_upload_folder_download_and_snapshot(hub_server: LocalHub) -> None:
    """create_repo (+exist_ok), upload_folder, hf_hub_download and a paginated snapshot_download round-trip bytes."""
    hub_server.page_size = 2  # force the tree listing used by snapshot_download over several Link-header pages
    result = _result(
        hub_server,
        f"""
        import json, os, pathlib, tempfile
        from huggingface_hub import HfApi, ModelCard, hf_hub_download, snapshot_download
        from huggingface_hub.errors import HfHubHTTPError

        api = HfApi()
        url = api.create_repo("user/demo")
        assert url.repo_id == "user/demo", repr(url)
        again = api.create_repo("user/demo", exist_ok=True)
        assert again.repo_id == "user/demo", repr(again)
        try:
            api.create_repo("user/demo")
            raise SystemExit("second create_repo without exist_ok must fail")
        except HfHubHTTPError as err:
            assert err.response.status_code == 409

        src = pathlib.Path(tempfile.mkdtemp())
        files = {{
            "config.json": json.dumps({{"hidden": 32, "name": "demo"}}).encode(),
            "weights/blob.bin": os.urandom(4096) + bytes(range(256)),
            "README.md": b"---\\nlicense: mit\\ntags:\\n- test\\n---\\n# Demo\\n",
        }}
        for name, data in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
        info = api.upload_folder(repo_id="user/demo", folder_path=str(src), commit_message="v1")
        assert len(info.oid) == 40 and api.repo_info("user/demo").sha == info.oid

        for name, data in files.items():
            assert pathlib.Path(hf_hub_download("user/demo", name)).read_bytes() == data, name
        snap = pathlib.Path(snapshot_download("user/demo"))
        got = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
        for name, data in files.items():
            assert (snap / name).read_bytes() == data, name

        card = ModelCard.load("user/demo")
        assert card.data.license == "mit" and card.data.tags == ["test"]
        card.data.license = "apache-2.0"
        card.push_to_hub("user/demo")
        print({MARKER!r} + json.dumps({{
            "sha": info.oid, "snapshot": got, "blob": files["weights/blob.bin"].hex(),
            "files": api.list_repo_files("user/demo"),
        }}))
        """,
    )
    expected = [".gitattributes", "README.md", "config.json", "weights/blob.bin"]
    assert result["snapshot"] == expected
    assert sorted(result["files"]) == expected
    assert hub_server.read_file("user/demo", "weights/blob.bin") == bytes.fromhex(result["blob"])
    assert b"license: apache-2.0" in hub_server.read_file("user/demo", "README.md")
    # newest first: ModelCard.push_to_hub's commit, upload_folder's, then the repo's initial .gitattributes one
    commits = hub_server.commits("user/demo")
    assert len(commits) == 3 and commits[1] == result["sha"]
    assert hub_server.errors == []


def test_new_commit_moves_main_and_old_revision_still_served(hub_server: LocalHub) -> None:
    """main follows the latest commit while revision=<first sha> keeps serving the old bytes."""
    result = _result(
        hub_server,
        f"""
        import json, pathlib
        from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

        api = HfApi()
        api.create_repo("user/rev")
        first = api.upload_file(path_or_fileobj=b"old", path_in_repo="data.txt", repo_id="user/rev").oid
        second = api.create_commit(
            "user/rev", [CommitOperationAdd("data.txt", b"new bytes")], commit_message="update"
        ).oid
        assert first != second and len(second) == 40

        def read(**kw):
            return pathlib.Path(hf_hub_download("user/rev", "data.txt", **kw)).read_text()

        assert read() == "new bytes"
        assert read(revision=first) == "old"
        assert read(revision=second) == "new bytes"
        assert api.repo_info("user/rev", revision=first).sha == first
        print({MARKER!r} + json.dumps({{"first": first, "second": second}}))
        """,
    )
    assert hub_server.head("user/rev") == result["second"]
    assert hub_server.read_file("user/rev", "data.txt") == b"new bytes"
    assert hub_server.read_file("user/rev", "data.txt", revision=result["first"]) == b"old"
    assert hub_server.errors == []


def test_write_file_helper_is_seen_by_client(hub_server: LocalHub) -> None:
    """Tampering through the storage helper creates a commit the client downloads (and resolves via etag)."""
    hub_server.create_repo("user/tamper")
    original = hub_server.write_file("user/tamper", "model.bin", b"\x00\x01good")
    tampered = hub_server.write_file("user/tamper", "model.bin", b"\x00\x01evil", message="tamper")
    assert original != tampered and hub_server.head("user/tamper") == tampered
    result = _result(
        hub_server,
        f"""
        import json, pathlib
        from huggingface_hub import HfApi, hf_hub_download, get_hf_file_metadata, hf_hub_url

        meta = get_hf_file_metadata(hf_hub_url("user/tamper", "model.bin"))
        data = pathlib.Path(hf_hub_download("user/tamper", "model.bin")).read_bytes()
        print({MARKER!r} + json.dumps({{"data": data.hex(), "etag": meta.etag, "commit": meta.commit_hash,
                                       "size": meta.size}}))
        """,
    )
    assert bytes.fromhex(result["data"]) == b"\x00\x01evil"
    assert result["commit"] == tampered
    assert result["etag"] == git_blob_oid(b"\x00\x01evil") and result["size"] == 6
    assert hub_server.read_file("user/tamper", "model.bin", revision=original) == b"\x00\x01good"


def test_misses_raise_the_client_specific_errors(hub_server: LocalHub) -> None:
    """Missing file / repo / revision and bad README YAML map to the client's dedicated exceptions."""
    hub_server.create_repo("user/present")
    _result(
        hub_server,
        f"""
        from huggingface_hub import HfApi, hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

        def raises(exc, fn, *args, **kw):
            try:
                fn(*args, **kw)
            except exc:
                return
            raise SystemExit(f"{{fn.__name__}}{{args}} did not raise {{exc.__name__}}")

        api = HfApi()
        raises(EntryNotFoundError, hf_hub_download, "user/present", "nope.txt")
        raises(RepositoryNotFoundError, hf_hub_download, "user/absent", "config.json")
        raises(RepositoryNotFoundError, api.repo_info, "user/absent")
        raises(RevisionNotFoundError, hf_hub_download, "user/present", ".gitattributes", revision="no-branch")
        assert api.repo_exists("user/present") and not api.repo_exists("user/absent")
        assert api.file_exists("user/present", ".gitattributes")
        assert not api.file_exists("user/present", "nope.txt")
        raises(ValueError, api.upload_file, path_or_fileobj=b"---\\nkey: [unclosed\\n---\\n", path_in_repo="README.md",
               repo_id="user/present")
        print({MARKER!r} + "{{}}")
        """,
    )
    assert hub_server.list_files("user/present") == [".gitattributes"]  # the bad README was never committed
    assert hub_server.errors == []


def test_run_client_reports_output_on_failure(hub_server: LocalHub) -> None:
    """A failing client surfaces its stderr, so a broken round trip is easy to debug."""
    with pytest.raises(ClientError, match="boom-marker"):
        run_client("raise RuntimeError('boom-marker')", hub_server.endpoint_env(), timeout=60)


def test_transformers_push_to_hub_and_from_pretrained(hub_server: LocalHub) -> None:
    """A tiny BERT pushed with push_to_hub loads back with from_pretrained and gives identical logits."""
    proc = run_client(
        """
        import torch
        from transformers import BertConfig, BertForSequenceClassification

        torch.manual_seed(0)
        config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                            vocab_size=100)
        model = BertForSequenceClassification(config).eval()
        model.push_to_hub("user/tiny")
        loaded = BertForSequenceClassification.from_pretrained("user/tiny").eval()
        ids = torch.randint(0, 100, (2, 9))
        with torch.no_grad():
            assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
        print("TINY_BERT_ROUNDTRIP_OK")
        """,
        hub_server.endpoint_env(),
        timeout=180,
    )
    assert "TINY_BERT_ROUNDTRIP_OK" in proc.stdout
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub_server.list_files("user/tiny"))
    assert json.loads(hub_server.read_file("user/tiny", "config.json"))["hidden_size"] == 32
    assert hub_server.errors == []
