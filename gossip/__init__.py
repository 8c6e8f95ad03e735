"""SWIM-style membership with Lifeguard, plus load and bandwidth dissemination."""
