"""perturbation_directions: the activation change, with a recording's unit coords."""

from __future__ import annotations

import torch
from noise_helpers import make_tiny_cnn

from neurovar.noise import collect_layer_activations, perturbation_directions
from neurovar.record import record_activations


def test_directions_are_the_activation_change_with_recording_coords():
    model = make_tiny_cnn()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=gen)
    xp = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    layer = "conv1"
    d = perturbation_directions(model, x, xp, layer=layer)
    ref = (collect_layer_activations(model, xp, layer=layer)
           - collect_layer_activations(model, x, layer=layer)).flatten(1).double()
    torch.testing.assert_close(torch.from_numpy(d.values), ref)
    rec = record_activations(model, x, layers=[layer], n_trials=1, rng=0, progress=False)
    unit = rec[layer]["activation"]["unit"]
    for name in ("unit_id", "channel", "y", "x"):
        assert (d[name].values == unit[name].values).all(), name
