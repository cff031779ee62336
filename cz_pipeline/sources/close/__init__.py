"""Close as a CRM source: leads as accounts, contacts, opportunities, tasks, users; API-key auth."""
