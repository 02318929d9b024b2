"""Webhooks: signed event deliveries, the users' secrets, the delivery log (API.md, "Events")."""
