"""WSGI entry point for gunicorn: `gunicorn broker.wsgi:app`."""

import sys

from broker import create_app
from broker.settings import ConfigError

try:
    app = create_app()
except ConfigError as exc:  # one line, not a traceback per worker
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(4)  # gunicorn's "app failed to load": the master stops instead of respawning workers
