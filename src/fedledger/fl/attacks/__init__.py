"""Poisoning attacks on federated learning (see :mod:`fedledger.fl.attacks.poisoning`)."""

from __future__ import annotations

from fedledger.fl.attacks.poisoning import (
    Coalition,
    Craft,
    GaussianNoise,
    LittleIsEnough,
    MeanOf,
    Scale,
    SignFlip,
    Train,
    UpdateAttack,
    alie_z,
    attack_rng,
    flip_labels,
    poison_data,
    poison_updates,
)

__all__ = [
    "Coalition",
    "Craft",
    "GaussianNoise",
    "LittleIsEnough",
    "MeanOf",
    "Scale",
    "SignFlip",
    "Train",
    "UpdateAttack",
    "alie_z",
    "attack_rng",
    "flip_labels",
    "poison_data",
    "poison_updates",
]
