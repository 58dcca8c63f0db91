"""A run folder: what a new run may be written into, what a resumed one may change, and which
metrics rows a resumed run keeps."""

from __future__ import annotations

import json
import pathlib

from solrl.config import RunConfig

# What a resumed run may change: where and how wide it runs, and how long; not what it computes.
RESUMABLE = ("cluster.", "train.iterations", "train.max_seconds")


class RunFolderError(ValueError):
    """A run folder that cannot be written or resumed as asked; the message says what to do."""


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: dict, config: RunConfig) -> dict[str, tuple]:
    """Fields whose value differs between a checkpoint's config and `config`, except RESUMABLE ones."""
    try:  # fields added since the checkpoint was written take their defaults, as the run did
        saved = RunConfig.model_validate(saved).model_dump(mode="json")
    except ValueError:
        pass  # a field since removed or renamed: compare as saved, and the difference is reported
    old, new = _flat(json.loads(json.dumps(saved))), _flat(json.loads(json.dumps(config.model_dump(mode="json"))))
    changed = {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}
    return {k: v for k, v in changed.items() if not k.startswith(RESUMABLE)}


def check_run_folder(out: pathlib.Path, resume: pathlib.Path | None, config: RunConfig) -> None:
    """Refuse, before anything starts or is written, a new run into a folder that holds files, and
    a resume whose checkpoint is damaged (CheckpointError) or whose config differs from `config`."""
    if resume is None:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RunFolderError(f"--out {out} is not an empty folder; pass a new one, or --resume {out} to continue the run in it")
        return
    from solrl.learner.checkpoint import inspect_checkpoint

    folder, state = inspect_checkpoint(resume)
    changes = config_changes(state.get("config", {}), config) if "config" in state else {}
    if changes:
        shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        raise RunFolderError(
            f"--resume {resume}: the config differs from checkpoint {folder.name}'s in {shown}; resume with the run's own config "
            f"({resume}/config.yaml and the same --set), changing only {', '.join(RESUMABLE)}*"
        )


def run_config_file(resume: pathlib.Path) -> pathlib.Path | None:
    """The config.yaml of the run a --resume path (a run folder or one of its checkpoints) names."""
    for folder in (resume, resume.parent.parent):
        if (folder / "config.yaml").is_file() and (folder / "checkpoints").is_dir():
            return folder / "config.yaml"
    return None


def rows_before(path: pathlib.Path, iteration: int) -> list[str]:
    """The metrics lines a resumed run keeps: those of the iterations its checkpoint holds. Later
    rows (and a line torn by a kill) belong to iterations the run redoes."""
    kept = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        if row["iteration"] < iteration:
            kept.append(line)
    return kept
