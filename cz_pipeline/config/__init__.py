"""Tenant configuration: the tenants file parsed into typed, validated objects."""
