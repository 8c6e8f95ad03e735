"""Helpers shared by every package's command line: JSON output and summary statistics.

A leaf: it imports nothing of ``peer``, ``policy`` or ``gossip``, so any of them may use it.
"""
