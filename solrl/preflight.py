"""What `solrl train` checks before anything starts or is written: the prompt files load and
fit the run, the model folder exists, the device is there, the metrics port can be bound. Each
failure is one line naming the setting, the value and the fix (PreflightError)."""

from __future__ import annotations

import pathlib
import socket

from solrl.config import RunConfig
from solrl.evaluation import load_run_prompts, validation_prompts, world_of
from solrl.metrics import LOOPBACK, TOKEN_ENV


class PreflightError(ValueError):
    """A setting the run would fail on later; the message names it and the fix."""


def _prompts(config: RunConfig, field: str, name: str) -> list[str]:
    try:
        return load_run_prompts(config, name)
    except (OSError, ValueError) as exc:  # missing or empty files, captions the world cannot parse
        raise PreflightError(f"{field}={name!r}: {exc}") from None


def preflight(config: RunConfig, metrics_port: int | None = None, metrics_host: str = "127.0.0.1", metrics_token: bool = False) -> None:
    try:  # settings the run's world (its reward's prompts and eval) cannot run
        world_of(config).check(config)
    except ValueError as exc:
        raise PreflightError(str(exc)) from None
    prompts = _prompts(config, "prompts", config.prompts)
    _prompts(config, "eval.prompts", config.eval.prompts)
    if config.keeps_best:
        _prompts(config, "eval.validation", config.eval.validation)
        try:
            validation_prompts(config)
        except ValueError as exc:
            raise PreflightError(str(exc)) from None
    k = config.rollout.prompts_per_iteration
    if k > len(prompts):
        raise PreflightError(
            f"rollout.prompts_per_iteration={k} is more than the {len(prompts)} prompts of {config.prompts!r}; "
            f"an iteration trains distinct prompts, so set it to at most {len(prompts)}"
        )
    if config.model.path is not None and config.cluster.stand_in is None and not pathlib.Path(config.model.path).is_dir():
        raise PreflightError(f"model.path={config.model.path!r} is not a folder; pass a local model folder")
    device = config.model.device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise PreflightError(f"model.device={device!r} but this machine has no CUDA device; use 'cpu' or 'auto'")
    if metrics_port is not None:
        if not 0 <= metrics_port <= 65535:
            raise PreflightError(f"--metrics-port {metrics_port} is not a port; pass 0-65535 (0: any free port)")
        if metrics_host not in LOOPBACK and not metrics_token:
            raise PreflightError(f"--metrics-host {metrics_host} is not loopback and {TOKEN_ENV} is not set; set a token or bind 127.0.0.1")
        with socket.socket(socket.AF_INET6 if ":" in metrics_host else socket.AF_INET) as s:
            try:
                s.bind((metrics_host, metrics_port))
            except OSError as exc:
                raise PreflightError(f"--metrics-host {metrics_host} --metrics-port {metrics_port} cannot be bound ({exc.strerror}); pass a free port or 0") from None
