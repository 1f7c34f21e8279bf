"""The one dictionary type: its activations, encoding and decoding, with known answers."""

from __future__ import annotations

import pytest
import torch

from compgraph.dictionaries.base import Dictionary, apply_activation
from compgraph.errors import ConfigError


def _identity_dictionary(activation, *, k=None, threshold=None, subtract_b_dec=False, b_dec=None):
    n = 5
    return Dictionary(kind="sae", site="resid_post", layer=0, activation=activation, k=k, threshold=threshold,
                      W_enc=torch.eye(n), b_enc=torch.zeros(n), W_dec=torch.eye(n),
                      b_dec=torch.zeros(n) if b_dec is None else b_dec, subtract_b_dec=subtract_b_dec)


def test_jumprelu_known_answer():
    pre = torch.tensor([[0.5, -1.0, 2.0, 0.25, 0.0625]])
    t = torch.tensor([0.375, -2.0, 2.0, 0.125, 0.125])
    # pre * (pre > t): strict inequality (2.0 at threshold 2.0 is off), negative thresholds pass negatives
    assert apply_activation(pre, "jumprelu", threshold=t).tolist() == [[0.5, -1.0, 0.0, 0.25, 0.0]]
    d = _identity_dictionary("jumprelu", threshold=t)
    assert d.encode(pre).tolist() == [[0.5, -1.0, 0.0, 0.25, 0.0]]


def test_topk_known_answers():
    pre = torch.tensor([[3.0, -1.0, 5.0, 2.0, -4.0]])
    assert apply_activation(pre, "topk", k=2).tolist() == [[3.0, 0.0, 5.0, 0.0, 0.0]]
    few = torch.tensor([[1.0, -1.0, -2.0, 2.0, -5.0]])  # only two positive: k=3 keeps no negative
    assert apply_activation(few, "topk", k=3).tolist() == [[1.0, 0.0, 0.0, 2.0, 0.0]]
    assert apply_activation(few, "topk_raw", k=3).tolist() == [[1.0, -1.0, 0.0, 2.0, 0.0]]
    assert apply_activation(few, "relu").tolist() == [[1.0, 0.0, 0.0, 2.0, 0.0]]


def test_subtract_b_dec_known_answer():
    b = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])
    d = _identity_dictionary("relu", subtract_b_dec=True, b_dec=b)
    x = torch.tensor([[3.0, 0.5, 1.0, -2.0, 2.0]])
    assert d.encode(x).tolist() == [[2.0, 0.0, 0.0, 0.0, 1.0]]
    assert d.decode(d.encode(x)).tolist() == [[3.0, 1.0, 1.0, 1.0, 2.0]]


def test_decode_with_a_skip_connection_needs_the_input():
    d = Dictionary(kind="transcoder", site="mlp_in", layer=0, activation="relu", W_enc=torch.eye(2),
                   b_enc=torch.zeros(2), W_dec=torch.eye(2), b_dec=torch.zeros(2), W_skip=2 * torch.eye(2),
                   output_site="mlp_out", output_layer=0)
    x = torch.tensor([[1.0, -1.0]])
    assert d.decode(d.encode(x), x).tolist() == [[3.0, -2.0]]  # relu(x) + 2x
    with pytest.raises(ConfigError, match="skip connection"):
        d.decode(d.encode(x))
