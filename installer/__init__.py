"""Install the GANPaint plug-in into every GIMP 3 found (3.0 and 3.2 each read their own user
folder), check the chain GIMP → plug-in → Python modules → server → model, and uninstall it.
Standard library only: it runs under any Python 3.8+, including GIMP's own.

    python -m installer                 # install for the current user, for every GIMP 3 found
    python -m installer --check         # diagnose every link, say how to fix the broken one
    python -m installer --uninstall     # remove it from all of them

Modules, one job each: ``finding`` (which GIMPs, where each reads plug-ins, its Python),
``copying`` (the plug-in folder and ganpaint.json), ``dependencies`` (zmq/msgpack for GIMP's
Python), ``checking`` (--check), ``cli`` (the command line).
"""

from .checking import Check, check, print_checks
from .cli import install, install_for, main, uninstall
from .common import CLIENT_NAME, CONFIG_NAME, KNOWN_SERIES, InstallError
from .copying import copy_plugin, read_config, rebind, start_problem
from .dependencies import ensure_modules, probe_python
from .finding import GimpInstall, find_gimp, user_plugin_dir

__all__ = [
    "CLIENT_NAME",
    "CONFIG_NAME",
    "KNOWN_SERIES",
    "Check",
    "GimpInstall",
    "InstallError",
    "check",
    "copy_plugin",
    "ensure_modules",
    "find_gimp",
    "install",
    "install_for",
    "main",
    "print_checks",
    "probe_python",
    "read_config",
    "rebind",
    "start_problem",
    "uninstall",
    "user_plugin_dir",
]
