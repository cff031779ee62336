"""Teamwork Desk as the helpdesk source: tickets with their customers, page-numbered search."""
