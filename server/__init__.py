"""ganpaint.server: the local ZeroMQ edit server, its client and the `ganpaint` CLI."""
