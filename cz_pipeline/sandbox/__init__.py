"""Local fakes of the vendor APIs (Close, Zoho CRM, Teamwork Desk), for the demo, tests and
benchmarks. They speak the wire contracts of `shared/docs/crm-api-contracts.md` on loopback and
add a control endpoint (`/_sandbox/...`) that is not part of any vendor API."""
