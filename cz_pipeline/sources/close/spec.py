"""What Close declares to the registry."""

from cz_pipeline.sources.spec import SourceSpec

SPEC = SourceSpec(
    system="close",
    kind="crm",
    secret_credentials=frozenset({"api_key"}),
    connector="cz_pipeline.sources.close.connector:CloseConnector.from_config",
    entities=("leads", "contacts", "deals", "tasks", "users"),
    auth="API key as the Basic-auth user name",
    delete_feed="event log (/event/, object_type + action=deleted)",
    default_base_url="https://api.close.com/api/v1",
    default_full_sync_cron="0 2 * * 6,0",
    native_parents=False,  # Close leads have no parent: a configured custom field names it
    mapping="cz_pipeline.sources.close.mapping:CLOSE",
)
