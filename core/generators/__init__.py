"""Generators behind one layered interface (see base.py)."""

from .base import LayeredGenerator, LayerInfo, ModelError, freeze
from .registry import DEFAULT_MODEL, ModelSpec, get_spec, load_model, model_specs, resolve_device

__all__ = [
    "DEFAULT_MODEL",
    "LayerInfo",
    "LayeredGenerator",
    "ModelError",
    "ModelSpec",
    "freeze",
    "get_spec",
    "load_model",
    "model_specs",
    "resolve_device",
]
