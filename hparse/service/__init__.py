"""The REST service and web page: ``hparse serve`` (``pip install "hparse[serve]"``).

Top layer: it uses :mod:`hparse.api` and :mod:`hparse.engine`; nothing in hparse imports it.
"""

from .app import create_app
from .server import run
from .settings import ServiceSettings

__all__ = ["create_app", "run", "ServiceSettings"]
