"""`manage.py seed_demo`: a fictional practice group to click through after `make run`.

Four locations in four time zones, one staff account per role (printed with its
password), about 2,000 patients with households, consents and external ids,
2+ years of appointment history plus upcoming visits, cadence rules for a dental
group, a PT clinic and a wellness membership, and the follow-ups that history
implies — some already called about, some assigned to the front desk. Running it
again adds nothing and prints the accounts again.

Everything is written under the system actor and lands in the audit trail:
single rows (locations, staff, grants, catalogue, cadence rules, household links,
sharing) through auditlog's signals, the bulk of the data through
`practicecrm.audit.bulk_create_audited`, which writes the entries bulk_create skips.
Contact attempts, and the follow-ups they marked contacted, are recorded as the
colleague who logged them.
"""

import time
from collections import Counter
from typing import Any

from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Prefetch

from followups.models import Followup
from followups.selectors import BUCKETS
from locations.management import demo_data as demo
from locations.management.demo_seeder import DEFAULT_SEED, DemoSeeder
from locations.models import Location, LocationGrant
from patients.models import Appointment, Patient
from patients.phones import format_phone
from patients.search import fold
from practicecrm.audit import system_actor

User = get_user_model()


def _demo_loaded() -> bool:
    """True when the demo is in; refuses to mix the demo into any other data."""
    slugs = {spec.slug for spec in demo.LOCATIONS}
    present = set(Location.objects.filter(slug__in=slugs).values_list("slug", flat=True))
    if present == slugs:
        return True
    usernames = [spec.username for spec in demo.USERS]
    if Location.objects.exists() or User.objects.filter(username__in=usernames).exists():
        # The demo creates a superuser whose password it prints: never next to real data.
        raise CommandError(
            "This database already has locations, or users named like the demo's, that "
            "seed_demo did not create. It only fills an empty database, so it changed nothing."
        )
    return False


class Command(BaseCommand):
    help = "Load the fictional demo practice group (once) and print the demo accounts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--patients",
            type=int,
            default=2000,
            metavar="N",
            help="How many patients to create (default 2000).",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=DEFAULT_SEED,
            help=f"Random seed (default {DEFAULT_SEED}); the same seed on the same day "
            "gives the same data.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["patients"] < 0:
            raise CommandError("--patients must be 0 or more.")
        if _demo_loaded():
            self.stdout.write("Demo data is already loaded; nothing was added.")
        else:
            started = time.perf_counter()
            entries_before = LogEntry.objects.count()
            seeder = DemoSeeder(patients=options["patients"], seed=options["seed"])
            # One transaction: a failed run leaves nothing behind, so a rerun starts clean.
            with transaction.atomic(), system_actor():
                counts = seeder.run()
            counts["audit_entries"] = LogEntry.objects.count() - entries_before
            self._print_summary(counts, elapsed=time.perf_counter() - started)
        self._print_accounts()

    def _print_summary(self, counts: Counter[str], *, elapsed: float) -> None:
        def breakdown(prefix: str, labels: dict[str, str]) -> str:
            parts = [f"{counts[prefix + key]:,} {label}" for key, label in labels.items()]
            return ", ".join(parts)

        zones = sorted({spec.time_zone for spec in demo.LOCATIONS})
        patient_states = {s.value: s.label.lower() for s in Patient.Status}
        visit_states = {s.value: s.label.lower() for s in Appointment.Status}
        followup_states = {s.value: s.label.lower() for s in Followup.Status}
        lines = [
            ("locations", f"{counts['locations']} ({', '.join(zones)})"),
            ("staff accounts", f"{counts['staff']} (+ the inactive “system” actor)"),
            ("patients", f"{counts['patients']:,} ({breakdown('patient:', patient_states)})"),
            ("households", f"{counts['households']:,}"),
            ("consents", f"{counts['consents']:,}"),
            ("external ids", f"{counts['external_ids']:,} (ehr_mrn)"),
            (
                "appointments",
                f"{counts['appointments']:,} ({breakdown('visit:', visit_states)}); "
                f"{counts['patients_upcoming']:,} patients have one coming up",
            ),
            ("discharges", f"{counts['discharges']:,}"),
            ("follow-ups", f"{counts['followups']:,} ({breakdown('followup:', followup_states)})"),
            ("attempts", f"{counts['attempts']:,} calls, messages and letters in the last weeks"),
            ("audit entries", f"{counts['audit_entries']:,}"),
        ]
        for index, spec in enumerate(demo.LOCATIONS):
            # What each location's Today page counts, for anyone who may contact patients.
            buckets = {f"{spec.slug}:{bucket}": bucket for bucket in BUCKETS}
            label = "" if index else "worklists"
            lines.append((label, f"{spec.name}: {breakdown('worklist:', buckets)}"))
        self.stdout.write(self.style.SUCCESS(f"Demo data loaded in {elapsed:.1f} s:"))
        for label, value in lines:
            self.stdout.write(f"  {label:<15} {value}")

    def _print_accounts(self) -> None:
        grants = LocationGrant.objects.select_related("location").order_by("location__name")
        users = {
            user.username: user
            for user in User.objects.filter(
                username__in=[spec.username for spec in demo.USERS]
            ).prefetch_related(Prefetch("location_grants", queryset=grants))
        }
        location_count = Location.objects.filter(is_active=True).count()
        rows = [("username", "password", "role", "locations")]
        for spec in demo.USERS:
            user = users.get(spec.username)
            if user is None:
                continue
            held = list(user.location_grants.all())
            role = ", ".join(sorted({grant.get_role_display() for grant in held})) or "none"
            if user.is_superuser:
                role += " + superuser"
            names = sorted({grant.location.name for grant in held})
            where = (
                f"all {len(names)} locations"
                if len(names) == location_count > 1
                else "; ".join(names)
            )
            rows.append((spec.username, spec.password, role, where or "—"))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS("Demo accounts (fictional data, demo passwords):"))
        for index, row in enumerate(rows):
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  " + "  ".join([*cells, row[3]]))
            if index == 0:
                self.stdout.write("  " + "  ".join("-" * w for w in [*widths, len(row[3])]))
        self._print_search_hint()

    def _print_search_hint(self) -> None:
        """Point at the showcase patients, typed the lazy way the search box allows."""
        present = {
            (p.first_name, p.last_name): p
            for p in Patient.objects.filter(
                first_name__in=[first for first, *_ in demo.SHOWCASE_PATIENTS],
                last_name__in=[last for *_, last, _ in demo.SHOWCASE_PATIENTS],
            ).order_by("-pk")  # namesakes may follow; the showcase rows come first
        }
        tries = []
        for first, _, last, _ in demo.SHOWCASE_PATIENTS[:3]:
            patient = present.get((first, last))
            if patient is not None:
                tries.append(f"“{fold(f'{first} {last}')}” finds {patient.display_name}")
                if len(tries) == 1 and patient.mobile_phone:
                    tries.append(f"so does “{format_phone(patient.mobile_phone)}”")
        if tries:
            self.stdout.write(f"\nSearch as frontdesk: {'; '.join(tries)}.")
