# Keys of the local sandbox servers (not real credentials). Sourced by `make demo`.
export DEMO_CLOSE_API_KEY="${DEMO_CLOSE_API_KEY:-api_sandbox_key}"
export DEMO_DESK_API_KEY="${DEMO_DESK_API_KEY:-tw_sandbox_key}"
export DEMO_ZOHO_CLIENT_ID="${DEMO_ZOHO_CLIENT_ID:-zoho_client}"
export DEMO_ZOHO_CLIENT_SECRET="${DEMO_ZOHO_CLIENT_SECRET:-zoho_secret}"
export DEMO_ZOHO_REFRESH_TOKEN="${DEMO_ZOHO_REFRESH_TOKEN:-zoho_refresh}"
# Automation ON by default for the demo only: the routine-sync sensor and the full-sync schedule
# start RUNNING when the code location loads with CZ_DEMO=1 (production leaves them STOPPED).
export CZ_DEMO="${CZ_DEMO:-1}"
export DEMO_SF_CLIENT_ID="${DEMO_SF_CLIENT_ID:-sf_client}"
export DEMO_SF_CLIENT_SECRET="${DEMO_SF_CLIENT_SECRET:-sf_secret}"
export DEMO_SF_REFRESH_TOKEN="${DEMO_SF_REFRESH_TOKEN:-sf_refresh}"
# Encrypts rotated Salesforce refresh tokens in sync.oauth_tokens (a Fernet key; the demo's is
# not secret — generate yours with `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`).
export CZ_TOKEN_KEY="${CZ_TOKEN_KEY:-ZGVtby1rZXktZGVtby1rZXktZGVtby1rZXktZGVtbzE=}"
# Notifications go to the sandbox's SMTP sink; `make demo` keeps them in .cz_data/mail/demo.mbox.
export CZ_SMTP_URL="${CZ_SMTP_URL:-smtp://127.0.0.1:8725}"
