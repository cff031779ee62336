"""Zoho CRM as a CRM source: OAuth refresh per data centre, module streams in field batches, deletions."""
