"""The paper's MEC simulation (AMCoEdge, arXiv 2512.17158): environment, methods, reproduction."""
