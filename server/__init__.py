"""ganpaint.server: the local ZeroMQ edit server; cli/ holds the `ganpaint` command and client/
the module the GIMP plug-in ships to talk to the server."""
