"""A phi checkpoint is checked before anything is built from it: its config against its weights
(shapes of the variant the config names, for any variant of the registry), finite weights, and
either format's structure; every bad one is one message naming the file, never a traceback."""
import pytest
import torch

from pipeline.core.errors import PipelineError
from pipeline.model.phi import PHI, build_phi, load_phi, save_phi

CONFIG = {"variant": "paper", "embed_dim": 8, "token_width": 6, "dropout": 0.5}


def ours(**change) -> dict:
    torch.manual_seed(0)
    return {"state_dict": build_phi(**CONFIG).state_dict(), "config": {**CONFIG, **change}}


def authors() -> dict:
    torch.manual_seed(0)
    return {"Phi": {f"layers.{k}": v for k, v in build_phi("official", 8, 6, 0.5).state_dict().items()}}


def edited(checkpoint: dict, where: str, key: str, value) -> dict:
    """`checkpoint` with its state dict's (or Phi's) `key` set to `value`."""
    checkpoint[where][key] = value
    return checkpoint


def with_nan(checkpoint: dict, where: str, key: str) -> dict:
    tensor = checkpoint[where][key].clone()
    tensor.view(-1)[3] = float("nan")
    return edited(checkpoint, where, key, tensor)


@pytest.mark.parametrize("checkpoint, message", [
    ({"Phi": [1, 2, 3]}, "'Phi' is a list, not a state dict"),
    (edited(authors(), "Phi", "layers.0.weight", torch.zeros(32)), "must be matrices"),
    (edited(authors(), "Phi", "layers.3.weight", torch.zeros(32, 31)), "3.weight has shape (32, 31), but the official phi"),
    (edited(authors(), "Phi", "layers.6.bias", "zeros"), "6.bias is 'zeros', not a tensor"),
    ({"config": "paper", "state_dict": {}}, "'config' is 'paper', not a mapping"),
    ({"config": CONFIG}, "has a 'config' but no 'state_dict'"),
    (ours(dropout=7), "dropout in [0, 1]"),
    (ours(embed_dim=True), "config 'embed_dim' is True"),
    (ours(variant="mine"), f"unknown phi variant 'mine'; valid names: {', '.join(PHI.names())}"),
    (ours(embed_dim=16), "0.weight has shape (8,), but the paper phi of embed_dim 16 and token_width 6 has (16,)"),
    (ours(variant="official"), "do not fit the official phi of its config: missing ['3.bias'"),
    (ours(token_width=None), "config 'token_width' is None"),
    (ours(hidden=2.5), "config 'hidden' is 2.5, not a whole number"),
    (ours(hidden=16), "1.weight has shape (32, 8), but the paper phi"),  # a hidden width the weights do not have
    (with_nan(ours(), "state_dict", "4.weight"), "4.weight holds NaN or inf"),
    (with_nan(authors(), "Phi", "layers.6.weight"), "6.weight holds NaN or inf"),
])
def test_a_bad_checkpoint_is_named_not_loaded(tmp_path, checkpoint, message):
    torch.save(checkpoint, tmp_path / "phi.pt")
    with pytest.raises(PipelineError) as refused:
        load_phi(tmp_path / "phi.pt")
    assert message in str(refused.value) and str(tmp_path / "phi.pt") in str(refused.value)


@pytest.mark.parametrize("variant", PHI.names())
def test_every_variant_round_trips_and_its_checks_hold_it_to_its_config(tmp_path, variant):
    phi = build_phi(variant, 8, 6, 0.3)
    save_phi(phi, {"variant": variant, "embed_dim": 8, "token_width": 6, "dropout": 0.3}, tmp_path / "phi.pt")
    again = load_phi(tmp_path / "phi.pt")
    assert all(torch.equal(a, b) for a, b in zip(phi.state_dict().values(), again.state_dict().values()))
    save_phi(phi, {"variant": variant, "embed_dim": 8, "token_width": 7, "dropout": 0.3}, tmp_path / "wrong.pt")
    with pytest.raises(PipelineError, match="the config does not describe these weights"):
        load_phi(tmp_path / "wrong.pt")
