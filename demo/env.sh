# Keys of the local sandbox servers (not real credentials). Sourced by `make demo`.
export DEMO_CLOSE_API_KEY="${DEMO_CLOSE_API_KEY:-api_sandbox_key}"
export DEMO_DESK_API_KEY="${DEMO_DESK_API_KEY:-tw_sandbox_key}"
export DEMO_ZOHO_CLIENT_ID="${DEMO_ZOHO_CLIENT_ID:-zoho_client}"
export DEMO_ZOHO_CLIENT_SECRET="${DEMO_ZOHO_CLIENT_SECRET:-zoho_secret}"
export DEMO_ZOHO_REFRESH_TOKEN="${DEMO_ZOHO_REFRESH_TOKEN:-zoho_refresh}"
# Automation ON by default for the demo only: the routine-sync sensor and the full-sync schedule
# start RUNNING when the code location loads with CZ_DEMO=1 (production leaves them STOPPED).
export CZ_DEMO="${CZ_DEMO:-1}"
