"""chatlab: the command line and the glue between ``sim`` and ``reference_server``.

Kept thin on purpose: models live in ``sim``, the server in ``reference_server``,
shared vocabulary in ``chatcore``.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
