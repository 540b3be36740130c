"""Build the benchmark data set of issue #7 (see locations.scale)."""

import datetime as dt

import environ
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from locations.scale import generate


class Command(BaseCommand):
    help = (
        "Fill the database with a realistic data set: --scale 1 is 20 locations, 200 staff, "
        "100,000 patients and 750,000 appointments (PostgreSQL only)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--scale", type=float, default=1.0, help="1 = 20 locations; 0.01 for tests"
        )
        parser.add_argument("--seed", type=int, default=7, help="Same seed, same data (default 7).")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Empty the app's tables (users and audit trail included) first.",
        )
        parser.add_argument(
            "--as-of",
            type=dt.date.fromisoformat,
            default=None,
            help="The day the data set ends and bookings start (YYYY-MM-DD; default today).",
        )
        parser.add_argument(
            "--database-url",
            default="",
            help="Load into this database instead of DATABASE_URL (postgres://…).",
        )

    def handle(self, *args, scale, seed, replace, as_of=None, database_url="", **options):
        if database_url:
            # Swap the default connection for one to that database (whatever backend
            # DATABASE_URL named): the next use of `connection` opens the new one.
            connections["default"].close()
            config = connections.configure_settings(
                {"default": environ.Env.db_url_config(database_url)}
            )
            connections.settings["default"] = config["default"]
            del connections["default"]
        counts = generate(scale, seed=seed, replace=replace, stdout=self.stdout, as_of=as_of)
        if not counts:
            raise CommandError("Nothing was generated.")
