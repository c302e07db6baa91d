"""Reference chat server (see docs/PROTOCOL.md and docs/server.md). Built on chatcore's
vocabulary; never imports sim.

    from reference_server import ServerConfig, run_server, ChatClient
"""

from .app import RunningServer, create_app, run_server
from .client import ChatClient, ChatError
from .config import ServerConfig

__all__ = ["ChatClient", "ChatError", "RunningServer", "ServerConfig", "create_app", "run_server"]
