"""Trained policy models shipped as package data."""
