"""Tools around peers, never imported by the runtime: the Python client, local clusters and CPU
quotas, the demo, scripted scenarios and the planner benchmark."""
