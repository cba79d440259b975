import pytest
import torch

from pipeline.core.errors import PipelineError
from pipeline.model.noise import NOISE, add_noise


@pytest.mark.parametrize("kind", NOISE.names())
def test_every_noise_kind_has_the_latent_shape_and_is_reproducible(kind):
    z = torch.randn(64, 32)
    a = NOISE.get(kind)(z, torch.Generator().manual_seed(0))
    b = NOISE.get(kind)(z, torch.Generator().manual_seed(0))
    assert a.shape == z.shape and a.dtype == z.dtype
    assert torch.equal(a, b)


def test_unif_gaussian_has_one_uniform_scale_per_sample():
    """n = u * g: each row is a Gaussian scaled by its own u in [0, 1]."""
    z = torch.zeros(4000, 256)
    n = NOISE.get("unif_gaussian")(z, torch.Generator().manual_seed(0))
    row_std = n.std(dim=1)
    assert row_std.min() < 0.05 and row_std.max() > 0.95 and row_std.max() < 1.15
    # u ~ Unif(0,1): the row scales are spread evenly, mean 1/2
    assert abs(row_std.mean().item() - 0.5) < 0.03
    assert abs((row_std < 0.25).float().mean().item() - 0.25) < 0.04


def test_noise_distributions_have_their_moments():
    z = torch.zeros(2000, 200)
    g = torch.Generator().manual_seed(1)
    assert abs(NOISE.get("gaussian")(z, g).std().item() - 1) < 0.01
    u = NOISE.get("uniform")(z, g)
    assert u.min() >= -1 and u.max() <= 1 and abs(u.std().item() - 3 ** -0.5) < 0.01
    assert abs(NOISE.get("exponential")(z, g).mean().item() - 1) < 0.01
    c = NOISE.get("chi2")(z, g)
    assert c.min() >= 0 and abs(c.mean().item() - 1) < 0.02
    assert abs(NOISE.get("student_t")(z, g).var().item() - 3) < 0.3  # df/(df-2)
    assert torch.equal(NOISE.get("none")(z, g), z)


def test_add_noise_scales_and_unknown_kind_lists_valid_names():
    z = torch.ones(8, 4)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(add_noise(z, "gaussian", 0.0, g), z)
    with pytest.raises(PipelineError, match="unknown noise 'foo'; valid names: chi2, exponential, gaussian"):
        add_noise(z, "foo", 1.0, g)
