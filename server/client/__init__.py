"""The plug-in's client (ganpaint_client.py): the standard library, zmq and msgpack only, so
the installer copies that one file next to the GIMP plug-in under the same name."""
