"""The local Twilio server now ships with the app: see reminders/twilio_sim.py."""

from reminders.twilio_sim import TwilioSim as TwilioServer

__all__ = ["TwilioServer"]
