"""The canonical columns of the `cs` model and how a tenant's CRM fills them. Each source package
holds its own mapping (SQL expressions over a payload alias `p`, jsonb); the derivations in
`derive.py` are written once against the canonical names.
"""

from __future__ import annotations

from cz_pipeline.config.tenants import CrmConfig, FieldSpec
from cz_pipeline.core.sql import SAFE_CASTS, json_expr, text_expr, typed
from cz_pipeline.sources.registry import source as source_spec

__all__ = ["ACCOUNT_CORE", "CONTACT_CORE", "SAFE_CASTS", "canonical", "custom_fields_expr", "json_expr",
           "text_expr", "typed"]

ACCOUNT_CORE = {"name": "text", "owner_crm_user_id": "text", "next_renewal_date": "date", "crm_url": "text"}
CONTACT_CORE = {"email": "text", "first_name": "text", "last_name": "text", "title": "text"}


def canonical(cfg: CrmConfig, entity: str) -> dict[str, str]:
    try:
        columns = dict(source_spec(cfg.system).canonical()[entity])
    except KeyError:
        raise NotImplementedError(f"no canonical mapping for {cfg.system} {entity}") from None
    if entity == "deals":  # deal fields the CRM has no standard field for (e.g. Close start/end dates)
        for name, source in cfg.deal_fields.items():
            if name in ("start_date", "end_date", "close_date"):
                columns[name] = typed(text_expr(source), "date")
    return columns


def custom_fields_expr(specs: tuple[FieldSpec, ...], core: dict[str, str]) -> str:
    """jsonb object of the configured non-core source fields, typed as the source sends them."""
    pairs = [f"'{s.name}', {json_expr(s.source)}" for s in specs if s.source and s.name not in core]
    return f"jsonb_strip_nulls(jsonb_build_object({', '.join(pairs)}))" if pairs else "'{}'::jsonb"
