"""Data generation, training and evaluation for the place-value models."""
