"""The data model: setup (sources, connectors, routes), orders, deliveries, identity."""

from broker.models.access import ConnectorGrant, ConsoleSession, LoginThrottle, TrustedIssuer, User
from broker.models.audit import AuditEntry, SigningKey
from broker.models.deliveries import Delivery, DeliveryAttempt, DeliveryStatus
from broker.models.identity import Client, IdempotencyKey, Token
from broker.models.leases import Lease
from broker.models.links import IdentityLink
from broker.models.orders import EventStatus, InboundEvent, Order, OrderVersion, TimelineEntry
from broker.models.setup import Connector, Route, Source

__all__ = [
    "AuditEntry", "Client", "Connector", "ConnectorGrant", "ConsoleSession", "Delivery",
    "DeliveryAttempt", "DeliveryStatus", "EventStatus", "IdempotencyKey", "IdentityLink",
    "InboundEvent", "Lease", "LoginThrottle", "Order", "OrderVersion", "Route", "SigningKey", "Source",
    "TimelineEntry", "Token", "TrustedIssuer", "User",
]
