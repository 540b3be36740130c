"""Appointment reminders and recall outreach (issue #4)."""
