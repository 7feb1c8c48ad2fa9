"""Shared fixtures: the real default model, small fast configs, photos made in code."""

from __future__ import annotations

import os

import pytest
import torch

from ganpaint.core.adapt import AdaptConfig
from ganpaint.core.generators import load_model
from ganpaint.core.invert import InvertConfig
from ganpaint.core.pipeline import PipelineConfig


@pytest.fixture(scope="session")
def dcgan():
    # GANPAINT_TEST_THREADS=1 runs the suite single-threaded: thresholds must hold either way
    # (kernels differ with the thread count).
    torch.set_num_threads(int(os.environ.get("GANPAINT_TEST_THREADS", "2")))
    return load_model("digiface-dcgan64", "cpu")


@pytest.fixture
def fast_cfg() -> PipelineConfig:
    """Few steps: tests check behaviour, not quality."""
    return PipelineConfig(
        invert=InvertConfig(starts=4, z_steps=15, r_steps=15),
        adapt=AdaptConfig(steps=20),
        quantile_samples=32,
    )
