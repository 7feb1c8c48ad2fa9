"""Models loaded on first use, one of each per server."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import torch

from ganpaint.core.generators import load_model, model_specs
from ganpaint.core.generators.base import LayeredGenerator


class ModelPool:
    """One device's loaded generators. Loading happens on the worker thread, under a lock,
    so two requests for a model never load it twice."""

    def __init__(
        self,
        device: torch.device,
        download: bool = True,
        checkpoints: Mapping[str, Path] | None = None,
    ):
        self.device = device
        self.download = download
        self.checkpoints = dict(checkpoints or {})  # model id -> file (`serve --checkpoint`)
        self._models: dict[str, LayeredGenerator] = {}
        self._lock = threading.Lock()

    @staticmethod
    def known() -> set[str]:
        return {s.id for s in model_specs()}

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def get(self, model_id: str) -> LayeredGenerator:
        with self._lock:
            gen = self._models.get(model_id)
            if gen is None:
                gen = load_model(
                    model_id,
                    self.device,
                    checkpoint=self.checkpoints.get(model_id),
                    download=self.download,
                )
                self._models[model_id] = gen
            return gen

    def describe(self) -> list[dict]:
        """Every registered model, whether or not loaded: [{"id", "resolution", ...}]."""
        loaded = set(self.loaded())
        return [
            {
                "id": s.id,
                "family": s.family,
                "resolution": s.resolution,
                "source": s.source,
                "loaded": s.id in loaded,
            }
            for s in model_specs()
        ]
