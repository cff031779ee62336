"""Notifications to tenant admins and operators."""
