"""The peer's pure core: decisions and data, no asyncio, no aiohttp, no clocks.

``planner`` turns a view and a request into a plan and owns the ``Recruiter`` seam it calls;
``recruit`` adapts the policies of ``policy.fleet`` to that seam; ``viewstate`` turns a gossip
view into planner input; ``costs`` is the calibrated compute model; ``jobs`` the job state
machine; ``requests`` validates HTTP bodies; ``shares`` encodes the shares and their replies
that travel over RPC and runs them on a ``Backend``; ``config`` is the frozen peer config;
``errors`` the error tree. Time is always passed in.
"""
