"""What Zoho CRM declares to the registry."""

from cz_pipeline.sources.spec import SourceSpec

SPEC = SourceSpec(
    system="zoho_crm",
    kind="crm",
    secret_credentials=frozenset({"client_id", "client_secret", "refresh_token"}),
    endpoint_credentials=frozenset({"accounts_url", "api_domain"}),
    connector="cz_pipeline.sources.zoho_crm.connector:ZohoCrmConnector.from_config",
    entities=("leads", "contacts", "deals", "tasks", "users"),
    auth="OAuth 2.0 refresh-token grant on the data centre's accounts server",
    delete_feed="/{module}/deleted",
    default_base_url="https://www.zohoapis.com",
    default_full_sync_cron="0 2 * * *",
    mapping="cz_pipeline.sources.zoho_crm.mapping:ZOHO",
)
