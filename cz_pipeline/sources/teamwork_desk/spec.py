"""What Teamwork Desk declares to the registry."""

from cz_pipeline.sources.spec import SourceSpec

SPEC = SourceSpec(
    system="teamwork_desk",
    kind="helpdesk",
    secret_credentials=frozenset({"api_key"}),
    connector="cz_pipeline.sources.teamwork_desk.connector:TeamworkDeskConnector.from_config",
    entities=("tickets",),
    auth="API key as a Bearer token",
    delete_feed=None,  # deleted tickets come back with state "deleted"; the full-sync diff finds the rest
)
