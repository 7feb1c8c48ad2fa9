"""Learning, dissection and discovery recover units whose meaning is known.

The generator here is real code, not a stand-in: a small LayeredGenerator whose edit layer
(16 units, 8×8) has units 5–9 drawing a bright 3×3-cell square wherever they fire (with a
little leakage elsewhere), while the other units only tint colours. The ranking functions
run on its actual activations; the segmenter labels the bright pixels of its images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ganpaint.core.concepts.discover import contact_sheet, discover, group_units
from ganpaint.core.concepts.dissect import Segmenter, dissect
from ganpaint.core.concepts.learn import concept_from_activations, learn_concept
from ganpaint.core.concepts.quantiles import on_values, weights_fingerprint
from ganpaint.core.concepts.rank import (
    iou_counts,
    iou_from_counts,
    label_masks,
    ranked,
    selection_scores,
    spherical_kmeans,
    unit_profiles,
)
from ganpaint.core.concepts.record import ConceptError
from ganpaint.core.edit import unit_quantiles
from ganpaint.core.generators.base import LayeredGenerator, LayerInfo, freeze
from ganpaint.core.invert import InvertConfig
from ganpaint.core.pipeline import PipelineConfig

SQUARE_UNITS = {5, 6, 7, 8, 9}
BRIGHT = 0.5  # mean RGB above this = the square


class _Code(nn.Module):
    """z [B, 8] → [B, 16, 4, 4]: channels 0–3 carry z0–z3 (square position, presence,
    intensity) as constant maps; 4–15 a fixed random spatial code of z4–z7."""

    def __init__(self, g: torch.Generator):
        super().__init__()
        self.w = nn.Parameter(torch.randn(12 * 16, 4, generator=g) * 0.5)

    def forward(self, z):
        B = z.shape[0]
        const = z[:, :4, None, None].expand(B, 4, 4, 4)
        return torch.cat([const, (z[:, 4:] @ self.w.T).view(B, 12, 4, 4)], dim=1)


class _Edit(nn.Module):
    """[B, 16, 4, 4] → the edit layer [B, 16, 8, 8]. Units 5–9: a 3×3-cell square (peak in
    its centre) at a position set by z0, z1, present when z2 > −0.3, brightness by z3, plus
    weak leakage; the other units: ReLU of a fixed random conv of the spatial code."""

    def __init__(self, g: torch.Generator):
        super().__init__()
        self.conv = nn.Parameter(torch.randn(11, 12, 3, 3, generator=g) * 0.1)
        self.leak = nn.Parameter(torch.randn(5, 12, 3, 3, generator=g) * 0.002)
        self.gain = nn.Parameter(torch.linspace(0.9, 1.3, 5))

    def forward(self, x):
        code = F.interpolate(x[:, 4:], scale_factor=2, mode="nearest")
        others = F.relu(F.conv2d(code, self.conv, padding=1))
        leak = F.relu(F.conv2d(code, self.leak, padding=1))
        pos = torch.sigmoid(x[:, :2, 0, 0]) * 6
        ty, tx = pos[:, 0].floor().clamp(0, 5), pos[:, 1].floor().clamp(0, 5)
        present = (x[:, 2, 0, 0] > -0.3).float()
        level = 1 + 0.25 * torch.tanh(x[:, 3, 0, 0])
        r = torch.arange(8.0, device=x.device)
        dy = r[None, :] - (ty[:, None] + 1)  # distance from the square's centre cell
        dx = r[None, :] - (tx[:, None] + 1)
        inside = (dy.abs() <= 1)[:, :, None] & (dx.abs() <= 1)[:, None, :]
        peak = 1 - 0.25 * (dy.abs()[:, :, None] + dx.abs()[:, None, :])
        sq = inside.float() * peak * (present * level)[:, None, None]
        square = sq[:, None] * self.gain.view(1, 5, 1, 1) + leak
        return torch.cat([others[:, :5], square, others[:, 5:]], dim=1)


class _Mix(nn.Module):
    """[B, 16, 8, 8] → [B, 8, 16, 16]: channel 0 = the square units' sum (brightness),
    1–7 = random mixes of the others (colour); nearest 2× upsampling."""

    def __init__(self, g: torch.Generator):
        super().__init__()
        w = torch.randn(8, 16, generator=g) * 0.3
        w[:, sorted(SQUARE_UNITS)] = 0
        w[0] = 0
        w[0, sorted(SQUARE_UNITS)] = 1
        self.w = nn.Parameter(w)

    def forward(self, x):
        return F.interpolate(torch.einsum("oc,bchw->bohw", self.w, x), scale_factor=2)


class _ToRGB(nn.Module):
    """RGB = tanh(2·brightness − 1 + colour), colour summing to 0 over R, G, B."""

    def __init__(self, g: torch.Generator):
        super().__init__()
        m = torch.randn(3, 7, generator=g)
        self.m = nn.Parameter((m - m.mean(dim=0, keepdim=True)) * 0.5)

    def forward(self, x):
        colour = torch.einsum("oc,bchw->bohw", self.m, x[:, 1:])
        return F.interpolate(torch.tanh(2 * x[:, :1] - 1 + colour), scale_factor=2)


class SquareGen(LayeredGenerator):
    latent_shape = (8,)
    edit_layer = "layer2"

    def __init__(self, seed: int = 7):
        g = torch.Generator().manual_seed(seed)
        layers = [_Code(g), _Edit(g), _Mix(g), _ToRGB(g)]
        infos = [
            LayerInfo("layer1", 16, 4),
            LayerInfo("layer2", 16, 8),
            LayerInfo("layer3", 8, 16),
            LayerInfo("output", 3, 32),
        ]
        super().__init__(layers, infos)
        self.model_id = "test-square"


class BrightSegmenter:
    """Labels pixels: 1 "square" where the mean RGB is bright, 0 "background" elsewhere."""

    labels = ("background", "square")

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return (images.mean(dim=1) > BRIGHT).long()


@pytest.fixture(scope="module")
def gen():
    torch.set_num_threads(2)
    return freeze(SquareGen())


def _example(gen, seed: int = 3):
    """A latent whose image shows the square, its activations and its bright-pixel mask."""
    g = torch.Generator().manual_seed(seed)
    while True:
        z = gen.sample_latent(1, g)
        with torch.no_grad():
            img = gen(z)
        mask = (img.mean(dim=1, keepdim=True) > BRIGHT).float()
        if 0 < mask.mean() < 0.5:
            return z, gen.features(z, "layer2"), mask, img


def test_generator_draws_the_square_where_its_units_fire(gen):
    z, acts, mask, _ = _example(gen)
    fire = acts[:, sorted(SQUARE_UNITS)].mean(dim=1, keepdim=True) > 0.2
    assert torch.equal(F.interpolate(fire.float(), size=32), mask)


def test_learn_ranking_recovers_square_units(gen):
    scale = unit_quantiles(gen, "layer2", 256)
    hits = []
    for seed in range(5):  # several single examples: each must work on its own
        _, acts, mask, _ = _example(gen, seed)
        scores, inside = selection_scores(acts, mask, scale)
        top5 = set(ranked(scores, 5))
        hits.append(len(top5 & SQUARE_UNITS))
        assert (inside[sorted(SQUARE_UNITS)] > 0.3).all()
    assert min(hits) >= 4, hits


def test_learned_concept_record(gen):
    _, acts, mask, _ = _example(gen)
    c = concept_from_activations(acts, mask, "square", gen.model_id, "layer2", None, k=15)
    assert c.source == "learned" and c.layer == "layer2" and c.model == "test-square"
    assert len(set(c.units[:5]) & SQUARE_UNITS) >= 4
    units, values = c.top("low")
    assert len(units) == 4 and len(values) == 4 and all(v > 0 for v in values)
    with pytest.raises(ConceptError, match="empty"):
        concept_from_activations(acts, torch.zeros_like(mask), "x", "m", "layer2", None)
    with pytest.raises(ConceptError, match="covers everything"):
        concept_from_activations(acts, torch.ones_like(mask), "x", "m", "layer2", None)


def test_learn_concept_through_the_pipeline(gen, tmp_path, monkeypatch):
    """A photo of the square (64 px, upscaled) is cropped and inverted by pipeline.prepare;
    the ranking of the inverted representation still finds the square units."""
    monkeypatch.setenv("GANPAINT_CACHE", str(tmp_path))
    _, _, mask, img = _example(gen)
    photo = ((img[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    photo = np.asarray(Image.fromarray(photo).resize((64, 64), Image.NEAREST))
    m = np.asarray(Image.fromarray((mask[0, 0].numpy() * 255).astype(np.uint8)).resize((64, 64)))
    cfg = PipelineConfig(invert=InvertConfig(starts=8, z_steps=10, r_steps=60))
    c = learn_concept(gen, photo, m, "square", cfg)
    assert c.source == "learned" and len(c.units) <= 15
    assert len(set(c.units[:5]) & SQUARE_UNITS) >= 4, c.units
    with pytest.raises(ConceptError, match="empty"):
        learn_concept(gen, photo, np.zeros_like(m), "square", cfg)


def test_dissect_recovers_square_units(gen):
    assert isinstance(BrightSegmenter(), Segmenter)
    d = dissect(gen, BrightSegmenter(), n_samples=400, batch=50)
    top5 = set(d.ranking("square", 5))
    assert len(top5 & SQUARE_UNITS) >= 4, d.ranking("square", 8)
    others = sorted(set(range(16)) - SQUARE_UNITS)
    assert float(d.iou[sorted(SQUARE_UNITS), 1].min()) > 3 * float(d.iou[others, 1].max())
    concepts = d.concepts(gen.model_id, on_values=unit_quantiles(gen, "layer2", 64), k=5)
    sq = next(c for c in concepts if c.name == "square")
    assert sq.source == "dissected" and len(set(sq.units) & SQUARE_UNITS) >= 4


def test_iou_counts_by_hand():
    units = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    units[0, 0, :2, :2] = True  # 4 px
    units[0, 1, :, :] = True  # 16 px
    labels = torch.full((1, 4, 4), -1)
    labels[0, :2, :] = 0  # 8 px of label 0, the rest unlabelled
    lm = label_masks(labels, 1)
    inter, ua, la = iou_counts(units, lm)
    iou = iou_from_counts(inter, ua, la)
    assert torch.allclose(iou[:, 0], torch.tensor([4 / 8, 8 / 16], dtype=iou.dtype))
    multi = torch.stack([labels, torch.ones_like(labels)], dim=1)  # 2 labels per pixel
    assert label_masks(multi, 2)[0, 1].all()


def test_discover_groups_square_units_together(gen, tmp_path, monkeypatch):
    monkeypatch.setenv("GANPAINT_CACHE", str(tmp_path))
    found = discover(gen, groups=4, n_samples=256)
    best = max(found.groups, key=lambda g: len(set(g) & SQUARE_UNITS))
    assert len(set(best) & SQUARE_UNITS) >= 4
    in_best = SQUARE_UNITS & set(best)
    assert set(best[: len(in_best)]) == in_best  # ranked first within their group
    assert sorted(u for g in found.groups for u in g) == list(range(16))
    concepts = found.concepts(gen.model_id)
    assert [c.name for c in concepts] == [f"group-{i:02d}" for i in range(1, 5)]
    assert all(c.source == "discovered" and c.values is not None for c in concepts)
    sheet = contact_sheet(gen, found, tmp_path / "sheet.png", per_row=3, n_samples=64)
    with Image.open(sheet) as im:
        assert im.mode == "RGB" and im.height > 4 * 96


def test_kmeans_finds_planted_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 50, generator=g)
    x = torch.cat([c + 0.3 * torch.randn(10, 50, generator=g) for c in centres])
    x = x / x.norm(dim=1, keepdim=True)
    labels, cent = spherical_kmeans(x, 3, seed=1)
    for i in range(3):
        assert len(set(labels[i * 10 : (i + 1) * 10].tolist())) == 1
    assert len(set(labels.tolist())) == 3
    assert torch.allclose(cent.norm(dim=1), torch.ones(3))


def test_dead_units_are_left_out():
    acts = torch.randn(20, 6, 4, 4)
    acts[:, 2] = 0.7  # constant: dead
    _, alive = unit_profiles(acts)
    assert alive.tolist() == [True, True, False, True, True, True]
    groups, _ = group_units(acts, 2)
    assert 2 not in {u for grp in groups for u in grp}


def test_on_values_cached_per_weights(gen, tmp_path):
    v1 = on_values(gen, cache=tmp_path, n_samples=64)
    files = list(tmp_path.glob("test-square-*-layer2-q0.99-n64-s0.json"))
    assert len(files) == 1 and weights_fingerprint(gen) in files[0].name
    assert torch.allclose(v1, unit_quantiles(gen, "layer2", 64))
    other = freeze(SquareGen(seed=8))
    assert weights_fingerprint(other) != weights_fingerprint(gen)
    on_values(other, cache=tmp_path, n_samples=64)
    assert len(list(tmp_path.glob("test-square-*.json"))) == 2
    # The cached file is what a fresh process would read.
    from ganpaint.core.concepts import quantiles

    quantiles._memo.clear()
    files[0].write_text(files[0].read_text().replace('"values": [', '"values": [12345.0, '))
    v2 = on_values(gen, cache=tmp_path, n_samples=64)  # wrong length: recomputed
    assert torch.allclose(v1, v2)


def test_library_fills_published_values_from_the_generator(gen, tmp_path, monkeypatch):
    from ganpaint.core.concepts.files import atomic_write_json
    from ganpaint.core.concepts.library import ConceptLibrary
    from ganpaint.core.concepts.record import Concept

    monkeypatch.setenv("GANPAINT_CACHE", str(tmp_path / "cache"))
    published = Concept("square", gen.model_id, "layer2", [7, 5, 6], None, "published")
    atomic_write_json(
        tmp_path / "test-square.json",
        {
            "format": "ganpaint-concepts",
            "version": 1,
            "model": gen.model_id,
            "concepts": [published.to_dict()],
        },
    )
    plain = ConceptLibrary(gen.model_id, user_dir=tmp_path / "u", builtin_dir=tmp_path)
    assert plain.get("square").top("low") == ([7, 5, 6], None)
    filled = ConceptLibrary(
        gen.model_id, user_dir=tmp_path / "u", builtin_dir=tmp_path, generator=gen
    )
    units, values = filled.get("square").top("low")
    q = unit_quantiles(gen, "layer2", 256)
    assert units == [7, 5, 6] and values == pytest.approx([float(q[u]) for u in units])
    assert list((tmp_path / "cache" / "models" / "quantiles").glob("test-square-*.json"))
