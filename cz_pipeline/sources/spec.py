"""What a source declares about itself (`SourceSpec`) and the surface the ingest engine relies on
(`Connector`). Configuration validation, connector building and the canonical mapping all read
these declarations, so adding a system is one package plus one line in the registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from cz_pipeline.core.http import HttpClient, Page, RetryPolicy

if TYPE_CHECKING:
    from cz_pipeline.config.tenants import CrmConfig, HelpdeskConfig


@dataclass(frozen=True)
class BuildContext:
    """What a connector may need beyond its configuration: the tenant it serves and the warehouse
    (for sources that keep state there, e.g. rotated OAuth refresh tokens)."""

    tenant_id: str
    engine: Any = None                                   # sqlalchemy.Engine of the warehouse


@runtime_checkable
class Connector(Protocol):
    """One vendor API as the ingest engine sees it: pages of records, deletions, field metadata."""

    system: str
    entities: tuple[str, ...]
    http: HttpClient

    def stream(self, entity: str, since: datetime | None) -> Iterator[Page]:
        """Pages of records changed at/after `since` (everything when None), oldest first."""

    def deletions(self, entity: str, since: datetime | None) -> Iterator[list[tuple[str, datetime | None]]]:
        """Pages of (source_id, deleted_at) the vendor reports; empty where the full-sync diff finds them."""

    def custom_fields(self, entity: str) -> dict[str, dict[str, Any]]:
        """Custom field definitions by key, for validating configured fields before a sync."""


@runtime_checkable
class CrmConnector(Connector, Protocol):
    """A CRM also answers which configured fields it does not have (checked before every sync)."""

    def unknown_fields(self, entity: str, fields: list[str]) -> list[str]: ...


@runtime_checkable
class WritableConnector(CrmConnector, Protocol):
    """A CRM that accepts write-back: one record's fields updated in place."""

    def update_record(self, entity: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SourceSpec:
    """The facts about one vendor system that configuration, building and mapping need.

    `connector` and `mapping` are "module:attribute" references, imported on first use so that
    loading the tenants file does not import every vendor's client."""

    system: str
    kind: Literal["crm", "helpdesk"]
    secret_credentials: frozenset[str]           # required, always given as {env: NAME}
    connector: str                               # "module:Class.from_config", called with (cfg, policy, context)
    entities: tuple[str, ...]
    auth: str                                    # how requests are authorised, for the docs and the UI
    delete_feed: str | None = None               # where deletions come from; None: full-sync diff only
    endpoint_credentials: frozenset[str] = frozenset()  # optional, may be written literally
    default_base_url: str | None = None
    default_full_sync_cron: str | None = None    # CRMs only
    native_parents: bool = True                  # False: the parent account comes from a configured field
    mapping: str | None = None                   # "module:DICT" of canonical SQL per entity (CRMs)

    def build(self, cfg: "CrmConfig | HelpdeskConfig", policy: RetryPolicy | None = None,
              context: BuildContext | None = None) -> Connector:
        try:
            factory: Callable[..., Connector] = _resolve(self.connector)
        except AttributeError:
            raise NotImplementedError(f"no connector for {self.system} yet") from None
        return factory(cfg, policy, context)

    def canonical(self) -> dict[str, dict[str, str]]:
        if self.mapping is None:
            raise NotImplementedError(f"{self.system} has no canonical mapping")
        return _resolve(self.mapping)

    @property
    def credential_keys(self) -> frozenset[str]:
        return self.secret_credentials | self.endpoint_credentials


def _resolve(ref: str) -> Any:
    module, _, attributes = ref.partition(":")
    value: Any = importlib.import_module(module)
    for attribute in attributes.split("."):
        value = getattr(value, attribute)
    return value
