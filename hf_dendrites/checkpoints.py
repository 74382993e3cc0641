"""Checkpoints that are complete or absent.

A dendrite checkpoint is the Trainer's checkpoint folder plus the dendrite state
(`dendrite_state.json`) and the best model so far (`dendrite_best/`). The state file is written
last, by rename, so its presence marks a complete checkpoint: a process killed while saving
leaves a folder without it, which resuming skips (with a warning naming it) and the next save
clears away.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

STATE_FILE = "dendrite_state.json"
BEST_FOLDER = "dendrite_best"
# reset_optimizer_on_growth=False, inside a dendrite phase: the neuron phase's optimizer state kept aside
KEPT_OPTIMIZER_FILE = "dendrite_kept_optimizer.pt"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def write_file_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` with `write(temporary_path)`, then rename: the old file or the whole new one."""
    temporary = path.with_name(path.name + ".tmp")
    write(temporary)
    os.replace(temporary, path)


def write_text_atomically(path: Path, text: str) -> None:
    """Write `path` so that it is either the old file or the whole new one, never a part."""
    write_file_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_folder_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Fill a temporary folder with `write`, then put it in place of `path`."""
    temporary = path.with_name(path.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    write(temporary)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(temporary, path)


def save_kept_optimizer_state(folder: Path, state: dict[str, dict] | None) -> None:
    """Write (or, with None, remove) the optimizer state a dendrite phase keeps aside."""
    path = folder / KEPT_OPTIMIZER_FILE
    if state is None:
        path.unlink(missing_ok=True)
    else:
        write_file_atomically(path, lambda target: torch.save(state, target))


def read_kept_optimizer_state(folder: Path) -> dict[str, dict] | None:
    path = folder / KEPT_OPTIMIZER_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} cannot be read ({error}): the checkpoint is damaged") from error


def is_complete(folder: str | os.PathLike) -> bool:
    return (Path(folder) / STATE_FILE).is_file()


def checkpoint_folders(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-<step>` folders of `output_dir`, by step."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in folder.iterdir() if (match := _CHECKPOINT_NAME.match(path.name))]
    return [path for _, path in sorted(found) if path.is_dir()]


def last_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are named in a warning."""
    folders = checkpoint_folders(output_dir)
    complete = [index for index, folder in enumerate(folders) if is_complete(folder)]
    newest = folders[complete[-1]] if complete else None
    skipped = [folder.name for folder in folders[complete[-1] + 1 if complete else 0 :]]
    if skipped:
        logger.warning(
            "dendrites: skipping incomplete checkpoint(s) %s (no %s: the save was interrupted); %s",
            skipped,
            STATE_FILE,
            f"resuming from {newest.name}" if newest is not None else "no complete checkpoint is left",
        )
    return newest


def remove_incomplete_checkpoints(output_dir: str | os.PathLike) -> None:
    """Delete what interrupted saves left behind (called once a new checkpoint is complete)."""
    for folder in checkpoint_folders(output_dir):
        if not is_complete(folder):
            logger.warning("dendrites: removing %s, left incomplete by an interrupted save", folder)
            shutil.rmtree(folder, ignore_errors=True)
