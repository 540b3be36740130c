"""Follow-up cadences and follow-ups (issue #3)."""
