"""The edit server scaled out on Ray: one ZeroMQ front, N worker actors (one per GPU, or CPU).

An optional extra (``pip install 'ganpaint[cluster]'``): nothing outside this package imports
Ray, and ``front`` imports it only when a cluster is asked for (``ganpaint serve --cluster``).
The front keeps the single server's socket loop, protocol and guarantees (server.py); only
where a job runs changes: on the worker that holds its photo's session (routing.py).
"""
