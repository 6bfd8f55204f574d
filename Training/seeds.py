"""Seed ranges of the generators: which seeds train, which validate, which are held out.

Every generator draws all its randomness from one integer seed. Training uses seeds from 0 up,
validation during training seeds from VALIDATION_SEED_BASE, and every score, demo and test of a
bundled model seeds from HELD_OUT_SEED_BASE: runs no model was trained or validated on.
"""
VALIDATION_SEED_BASE = 900_000_000
HELD_OUT_SEED_BASE = 1_000_000_000
