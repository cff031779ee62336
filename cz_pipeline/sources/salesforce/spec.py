"""What Salesforce declares to the registry."""

from cz_pipeline.sources.spec import SourceSpec

SPEC = SourceSpec(
    system="salesforce",
    kind="crm",
    secret_credentials=frozenset({"client_id", "client_secret", "refresh_token"}),
    endpoint_credentials=frozenset({"login_url"}),
    connector="cz_pipeline.sources.salesforce.connector:SalesforceConnector.from_config",
    entities=("leads", "contacts", "deals", "tasks", "users"),
    auth="OAuth 2.0 refresh-token grant on the login host; calls go to the instance_url it names",
    delete_feed="queryAll with IsDeleted = true",
    default_base_url=None,  # the token answer names the instance
    default_full_sync_cron="0 2 * * *",
    mapping="cz_pipeline.sources.salesforce.mapping:SALESFORCE",
)
