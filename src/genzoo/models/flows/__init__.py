"""Normalizing flows: RealNVP and Glow (exact change of variables, dequantized lower bound)."""
