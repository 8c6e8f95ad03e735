"""The science: the paper's MEC model, allocation, learned and heuristic recruitment policies."""
