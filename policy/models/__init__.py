"""Trained policies shipped as package data (ONNX models, checkpoints and their cards)."""
