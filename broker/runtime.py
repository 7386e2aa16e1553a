"""Per-process runtime: settings, database, secret box, queue publisher and connector cache.

The gateway and the workers build one each from the same settings; nothing here is created
at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import cached_property
from typing import TYPE_CHECKING

from broker.db import Database
from broker.logging import register_secret
from broker.services.crypto import SecretBox
from broker.settings import Settings, load_settings
from connectors import allowlist

if TYPE_CHECKING:
    from broker.models import Connector as ConnectorRow
    from broker.queue import Publisher
    from broker.services.sources import SourceCache
    from connectors.base import Connector


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        allowlist.configure(allow_private=settings.allow_private_networks,
                       allowed=settings.allowed_private_hosts)
        self.db = Database(settings.database_url)
        self.box = SecretBox(settings.secret_keys)
        self._connectors: dict[str, tuple[str, Connector]] = {}
        # Seconds a push to each connector takes in this process (a moving average): delivery
        # batches are sized from it.
        self.push_seconds: dict[str, float] = {}
        # Set when the process is asked to stop (a worker's SIGTERM): loops stop claiming work
        # and hand back what they hold but have not started.
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    @cached_property
    def sources(self) -> SourceCache:
        from broker.services.sources import SourceCache

        return SourceCache(self.db, self.box)

    @cached_property
    def publisher(self) -> Publisher:
        from broker.queue import Publisher, make_celery

        return Publisher(make_celery(self.settings))

    def connector(self, row: ConnectorRow) -> Connector:
        """A live connector for the row, rebuilt only when its config or secrets change."""
        stamp = hashlib.sha256(json.dumps([row.kind, row.config, row.secrets_encrypted],
                                          sort_keys=True, default=str).encode()).hexdigest()
        with self._lock:
            cached = self._connectors.get(row.id)
            if cached and cached[0] == stamp:
                return cached[1]
            instance = self.new_connector(row)
            if cached:
                cached[1].close()
            self._connectors[row.id] = (stamp, instance)
            return instance

    def new_connector(self, row: ConnectorRow) -> Connector:
        """A connector instance of its own (not shared): its secrets decrypted and registered
        for redaction, its OAuth consent wired to the grant the broker keeps."""
        from connectors.config import merge_secrets
        from connectors.registry import connector_class

        secrets = self.box.decrypt(row.secrets_encrypted, {})
        for value in secrets.values():
            if value:
                register_secret(str(value))
        config = merge_secrets(row.config or {}, secrets)
        cls = connector_class(row.kind)
        instance = cls(cls.Config().load(config), name=row.name)
        spec = instance.consent()
        if spec is not None:  # an admin's OAuth consent: tokens from the grant the broker keeps
            from broker.services.custody import GrantTokenSource

            instance.use_tokens(GrantTokenSource(self.db, self.box, row.id, row.name, spec))
        return instance

    def close(self) -> None:
        for _, instance in self._connectors.values():
            instance.close()
        self._connectors.clear()
        self.db.dispose()


_process_runtime: tuple[int, Runtime] | None = None


def stop_requested() -> None:
    """Tell this process's runtime, if it has one, that the process is stopping."""
    if _process_runtime is not None and _process_runtime[0] == os.getpid():
        _process_runtime[1].stopping.set()


def process_runtime(settings: Settings | None = None) -> Runtime:
    """The runtime of this process (rebuilt after fork: connections never cross processes)."""
    global _process_runtime
    if _process_runtime is None or _process_runtime[0] != os.getpid():
        _process_runtime = (os.getpid(), Runtime(settings or load_settings()))
    return _process_runtime[1]
