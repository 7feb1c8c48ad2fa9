"""The selection's fade that follows the photo's edges (core/guided.py)."""

from __future__ import annotations

import torch

from ganpaint.core.guided import box_mean, edge_aware_fade, guided_filter


def test_box_mean_is_the_mean_over_the_window_inside_the_image():
    t = torch.rand(2, 23, 31, generator=torch.Generator().manual_seed(0))
    for r in (1, 4, 40):
        want = torch.empty_like(t)
        for y in range(23):
            for x in range(31):
                win = t[:, max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1]
                want[:, y, x] = win.mean((1, 2))
        torch.testing.assert_close(box_mean(t, r), want, atol=1e-5, rtol=0)


def half_plane(h: int = 160, w: int = 200, at: int = 100) -> torch.Tensor:
    sel = torch.zeros(h, w)
    sel[:, at:] = 1
    return sel


def test_on_a_plain_photo_the_guided_filter_is_the_blind_blur():
    guide = torch.full((3, 160, 200), 0.4)
    q, flat, _ = guided_filter(guide, half_plane(), 20, 0.01)
    torch.testing.assert_close(q, flat, atol=1e-5, rtol=0)
    assert 0.4 < float(q[80, 100]) < 0.6 and float(q[80, 160]) > 0.99


def test_the_fade_follows_a_photo_edge_along_the_selection_and_nothing_else():
    sel = half_plane()
    blind = torch.where(sel > 0, (torch.arange(200) - 100).clamp(0, 40) / 40, 0.0).expand(160, -1)
    plain = torch.full((3, 160, 200), 0.5)
    same = edge_aware_fade(blind, sel, plain, 40, 0.01)
    torch.testing.assert_close(same, blind, atol=1e-5, rtol=0)  # plain photo: the fade as it was
    edged = plain.clone()
    edged[:, :, 100:] = 0.1  # the photo's own edge where the selection's is
    lifted = edge_aware_fade(blind, sel, edged, 40, 0.01)
    assert float(lifted[80, 101:106].min()) > 0.7  # the change is there at once
    assert (lifted[sel == 0] == 0).all() and (lifted <= sel).all()
    off = plain.clone()
    off[:, :, 130:] = 0.1  # an edge 30 px inside: the band before it keeps the blind fade
    band = edge_aware_fade(blind, sel, off, 40, 0.01)
    assert float((band[80, 100:125] - blind[80, 100:125]).abs().max()) < 0.15
    assert float(band[80, 131:136].min()) > 0.9
    across = edged.clone()
    across[:, :30, 60:100] = 0.1  # the dark side also lies outside the selection, rows 0–30
    cut = edge_aware_fade(blind, sel, across, 40, 0.01)
    torch.testing.assert_close(cut[:20, 100:110], blind[:20, 100:110], atol=0.05, rtol=0)
    assert float(cut[150, 101:106].min()) > 0.7  # away from the cut, the edge's lift
