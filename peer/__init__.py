"""The amcoedge peer runtime: RPC, HTTP API, planner, executors, CLI."""
