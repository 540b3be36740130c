"""The fixed part of the demo data set that `manage.py seed_demo` loads.

Everything here is fictional: phone numbers are in the 555-0100…0199 range that
North American numbering reserves for fiction, e-mail domains are reserved
example domains (RFC 2606), and staff and providers are invented people. The
random part (patients and their history) is generated in
`commands/seed_demo.py` from these tables.
"""

from dataclasses import dataclass, field

from locations.models import Role

DENTAL = "dental"
PHYSICAL_THERAPY = "pt"
WELLNESS = "wellness"

_WEEKDAYS_8_TO_5 = {day: ["08:00", "17:00"] for day in ("mon", "tue", "wed", "thu", "fri")}


@dataclass(frozen=True)
class DemoLocation:
    """A clinic of the demo group, plus what its patients look like."""

    slug: str
    name: str
    kind: str
    time_zone: str
    address_line1: str
    address_line2: str
    city: str
    region: str
    postal_code: str
    phone: str
    sms_from_number: str
    email_from: str
    business_hours: dict[str, list[str]]
    module_appointment_reminders: bool = False
    module_intake: bool = False
    module_memberships: bool = False
    module_referrals: bool = False
    # Share of the demo's patients whose home location this is.
    patient_share: float = 0.25
    # Local area codes first: patients mostly carry a number from their metro.
    area_codes: tuple[str, ...] = ()
    towns: tuple[tuple[str, str], ...] = ()  # (city, ZIP) near the clinic
    streets: tuple[str, ...] = ()
    # Faker locales (weighted) that patient names are drawn from, by neighbourhood mix.
    name_locales: tuple[tuple[str, int], ...] = ()


LOCATIONS: tuple[DemoLocation, ...] = (
    DemoLocation(
        slug="riverside-austin",
        name="Riverside Dental — Austin",
        kind=DENTAL,
        time_zone="America/Chicago",
        address_line1="2401 S Lamar Blvd",
        address_line2="Suite 110",
        city="Austin",
        region="TX",
        postal_code="78704",
        phone="+15125550100",
        sms_from_number="+15125550101",
        email_from="austin@riversidedental.example",
        business_hours={
            **{day: ["07:30", "17:00"] for day in ("mon", "tue", "wed", "thu")},
            "fri": ["08:00", "14:00"],
        },
        module_appointment_reminders=True,
        patient_share=0.32,
        area_codes=("512", "737", "254", "830", "979", "361", "210", "726"),
        towns=(
            ("Austin", "78704"),
            ("Austin", "78745"),
            ("Austin", "78702"),
            ("Austin", "78757"),
            ("Austin", "78723"),
            ("Austin", "78748"),
            ("Round Rock", "78664"),
            ("Pflugerville", "78660"),
            ("Cedar Park", "78613"),
            ("Buda", "78610"),
        ),
        streets=(
            "Manchaca Rd",
            "S 1st St",
            "Bouldin Ave",
            "Slaughter Ln",
            "E Cesar Chavez St",
            "Manor Rd",
            "Burnet Rd",
            "Anderson Ln",
            "Berkman Dr",
            "Brodie Ln",
            "Wells Branch Pkwy",
            "Gattis School Rd",
            "Whitestone Blvd",
            "Oltorf St",
        ),
        name_locales=(
            ("en_US", 55),
            ("es_MX", 28),
            ("vi_VN", 5),
            ("en_IN", 4),
            ("zh_CN", 3),
            ("de_DE", 2),
            ("pt_BR", 2),
            ("fr_FR", 1),
        ),
    ),
    DemoLocation(
        slug="hillcrest-denver",
        name="Hillcrest Dental — Denver",
        kind=DENTAL,
        time_zone="America/Denver",
        address_line1="1550 S Colorado Blvd",
        address_line2="Suite 200",
        city="Denver",
        region="CO",
        postal_code="80222",
        phone="+13035550100",
        sms_from_number="+13035550101",
        email_from="denver@hillcrestdental.example",
        business_hours={**_WEEKDAYS_8_TO_5, "sat": ["08:00", "12:00"]},
        patient_share=0.26,
        area_codes=("303", "720", "983", "719", "970"),
        towns=(
            ("Denver", "80206"),
            ("Denver", "80210"),
            ("Denver", "80211"),
            ("Denver", "80222"),
            ("Denver", "80224"),
            ("Aurora", "80012"),
            ("Aurora", "80014"),
            ("Lakewood", "80226"),
            ("Englewood", "80113"),
            ("Littleton", "80120"),
        ),
        streets=(
            "E Colfax Ave",
            "S Pearl St",
            "W 32nd Ave",
            "S Holly St",
            "E Evans Ave",
            "S Havana St",
            "W Alameda Ave",
            "S Broadway",
            "E Hampden Ave",
            "Tennyson St",
            "S Monaco Pkwy",
            "Yosemite St",
        ),
        name_locales=(
            ("en_US", 62),
            ("es_MX", 22),
            ("de_DE", 4),
            ("vi_VN", 3),
            ("en_IN", 3),
            ("zh_CN", 2),
            ("pl_PL", 2),
            ("fr_FR", 2),
        ),
    ),
    DemoLocation(
        slug="lakeside-seattle",
        name="Lakeside Physical Therapy — Seattle",
        kind=PHYSICAL_THERAPY,
        time_zone="America/Los_Angeles",
        address_line1="4700 Roosevelt Way NE",
        address_line2="Suite 3",
        city="Seattle",
        region="WA",
        postal_code="98105",
        phone="+12065550100",
        sms_from_number="+12065550101",
        email_from="seattle@lakesidept.example",
        business_hours={day: ["07:00", "19:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
        module_appointment_reminders=True,
        module_intake=True,
        module_referrals=True,
        patient_share=0.24,
        area_codes=("206", "253", "360", "425", "509", "564"),
        towns=(
            ("Seattle", "98105"),
            ("Seattle", "98115"),
            ("Seattle", "98103"),
            ("Seattle", "98118"),
            ("Seattle", "98144"),
            ("Seattle", "98126"),
            ("Shoreline", "98155"),
            ("Bellevue", "98004"),
            ("Renton", "98057"),
            ("Kirkland", "98033"),
        ),
        streets=(
            "NE 65th St",
            "Roosevelt Way NE",
            "Greenwood Ave N",
            "Rainier Ave S",
            "Beacon Ave S",
            "California Ave SW",
            "15th Ave NE",
            "Lake City Way NE",
            "S Jackson St",
            "NE 8th St",
            "Market St",
            "Phinney Ave N",
        ),
        name_locales=(
            ("en_US", 55),
            ("zh_CN", 10),
            ("es_MX", 10),
            ("vi_VN", 9),
            ("en_IN", 7),
            ("sv_SE", 3),
            ("fr_FR", 3),
            ("de_DE", 3),
        ),
    ),
    DemoLocation(
        slug="harbor-boston",
        name="Harbor Wellness — Boston",
        kind=WELLNESS,
        time_zone="America/New_York",
        address_line1="288 Commonwealth Ave",
        address_line2="",
        city="Boston",
        region="MA",
        postal_code="02116",
        phone="+16175550100",
        sms_from_number="+16175550101",
        email_from="boston@harborwellness.example",
        business_hours={
            **{day: ["09:00", "18:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
            "sat": ["09:00", "13:00"],
        },
        module_memberships=True,
        patient_share=0.18,
        area_codes=("617", "857", "781", "339", "508", "774", "978", "351", "413"),
        towns=(
            ("Boston", "02116"),
            ("Boston", "02127"),
            ("Boston", "02130"),
            ("Cambridge", "02139"),
            ("Somerville", "02143"),
            ("Brookline", "02446"),
            ("Dorchester", "02124"),
            ("Quincy", "02169"),
            ("Medford", "02155"),
            ("Newton", "02458"),
        ),
        streets=(
            "Tremont St",
            "Dorchester Ave",
            "Centre St",
            "Massachusetts Ave",
            "Highland Ave",
            "Beacon St",
            "Harvard St",
            "Hancock St",
            "Boston Ave",
            "Washington St",
            "Cambridge St",
            "Blue Hill Ave",
        ),
        name_locales=(
            ("en_US", 50),
            ("en_IE", 10),
            ("pt_BR", 10),
            ("es_MX", 10),
            ("it_IT", 6),
            ("fr_FR", 4),
            ("zh_CN", 5),
            ("vi_VN", 3),
            ("yo_NG", 2),
        ),
    ),
)

# Once a location's own area codes run out, numbers come from these (people keep
# their mobile number when they move). Still 555-01xx, so still fictional.
OVERFLOW_AREA_CODES = (
    "212", "312", "415", "305", "404", "602", "702", "503", "615", "704",
    "713", "214", "801", "919", "407", "216", "412", "313", "651", "816",
)  # fmt: skip
# 555-0100…0109 are the clinics' own numbers; patients get 0110…0199.
PATIENT_LINE_NUMBERS = range(110, 200)


@dataclass(frozen=True)
class DemoUser:
    """A staff account printed with its password at the end of `seed_demo`."""

    username: str
    password: str
    first_name: str
    last_name: str
    role: str
    locations: tuple[str, ...]  # slugs
    is_superuser: bool = False

    @property
    def email(self) -> str:
        return f"{self.first_name}.{self.last_name}@staff.example".lower()


_ALL = tuple(location.slug for location in LOCATIONS)

# Demo passwords are printed on purpose: the demo runs on a laptop with fictional
# data. They still pass AUTH_PASSWORD_VALIDATORS (seed_demo checks), so the same
# rules apply to the demo as to real accounts.
USERS: tuple[DemoUser, ...] = (
    DemoUser(
        "admin", "Copper-Kettle-Admin-48", "Dana", "Whitfield", Role.ADMIN, _ALL, is_superuser=True
    ),
    DemoUser(
        "manager",
        "Maple-Ledger-Weekly-27",
        "Priya",
        "Raman",
        Role.PRACTICE_MANAGER,
        ("riverside-austin", "hillcrest-denver", "lakeside-seattle"),
    ),
    DemoUser(
        "frontdesk",
        "Blue-Heron-Welcome-31",
        "Maribel",
        "Gonzalez",
        Role.FRONT_DESK,
        ("riverside-austin",),
    ),
    DemoUser(
        "frontdesk2",
        "Quiet-River-Welcome-64",
        "Tom",
        "Becker",
        Role.FRONT_DESK,
        ("riverside-austin", "hillcrest-denver"),
    ),
    DemoUser(
        "carestaff",
        "Cedar-Trail-Caring-59",
        "Kenji",
        "Watanabe",
        Role.CARE_STAFF,
        ("lakeside-seattle", "harbor-boston"),
    ),
)


@dataclass(frozen=True)
class DemoAppointmentType:
    code: str
    name: str
    minutes: int
    kind: str
    # Provider titles who see this type, the usual one first.
    titles: tuple[str, ...]


APPOINTMENT_TYPES: tuple[DemoAppointmentType, ...] = (
    DemoAppointmentType("hygiene-cleaning", "Hygiene cleaning", 60, DENTAL, ("RDH",)),
    DemoAppointmentType("comprehensive-exam", "Comprehensive exam", 60, DENTAL, ("DDS",)),
    DemoAppointmentType("periodic-exam", "Periodic exam", 30, DENTAL, ("DDS",)),
    DemoAppointmentType("filling", "Filling", 60, DENTAL, ("DDS",)),
    DemoAppointmentType("crown-prep", "Crown prep", 90, DENTAL, ("DDS",)),
    DemoAppointmentType(
        "pt-initial-evaluation", "PT initial evaluation", 60, PHYSICAL_THERAPY, ("DPT",)
    ),
    DemoAppointmentType(
        "pt-treatment-session", "PT treatment session", 45, PHYSICAL_THERAPY, ("PTA", "DPT")
    ),
    DemoAppointmentType("pt-re-evaluation", "PT re-evaluation", 45, PHYSICAL_THERAPY, ("DPT",)),
    DemoAppointmentType("pt-discharge-visit", "PT discharge visit", 30, PHYSICAL_THERAPY, ("DPT",)),
    DemoAppointmentType("membership-review", "Membership review", 30, WELLNESS, ("NP",)),
    DemoAppointmentType("wellness-consultation", "Wellness consultation", 45, WELLNESS, ("NP",)),
)


@dataclass(frozen=True)
class DemoProvider:
    name: str
    title: str
    locations: tuple[str, ...] = field(default=())


PROVIDERS: tuple[DemoProvider, ...] = (
    DemoProvider("Elena Castillo", "DDS", ("riverside-austin",)),
    DemoProvider("Marcus Reed", "DDS", ("riverside-austin",)),
    DemoProvider("Hannah Brooks", "RDH", ("riverside-austin",)),
    DemoProvider("Luis Ortega", "RDH", ("riverside-austin",)),
    DemoProvider("Priyanka Shah", "DDS", ("hillcrest-denver",)),
    DemoProvider("Thomas Albrecht", "DDS", ("hillcrest-denver",)),
    DemoProvider("Megan O'Neill", "RDH", ("hillcrest-denver",)),
    DemoProvider("Sofía Álvarez", "RDH", ("hillcrest-denver",)),
    # A hygienist on rotation between the two dental offices (one provider, two locations).
    DemoProvider("Grace Liu", "RDH", ("riverside-austin", "hillcrest-denver")),
    DemoProvider("Jordan Kim", "DPT", ("lakeside-seattle",)),
    DemoProvider("Aisha Bello", "DPT", ("lakeside-seattle",)),
    DemoProvider("Ryan Nakamura", "PTA", ("lakeside-seattle",)),
    DemoProvider("Chloé Tremblay", "PTA", ("lakeside-seattle",)),
    DemoProvider("Olivia Grant", "NP", ("harbor-boston",)),
    DemoProvider("Samuel Osei", "NP", ("harbor-boston",)),
)

# A few fixed patients at the front desk's location, so the accent- and
# case-insensitive search can be shown by name: (first, preferred, last, language).
SHOWCASE_PATIENTS: tuple[tuple[str, str, str, str], ...] = (
    ("José", "Pepe", "Núñez", "es"),
    ("Zoë", "", "Müller", "en"),
    ("Hương", "Helen", "Nguyễn", "vi"),
    ("Siobhán", "", "O'Connor", "en"),
    ("François", "", "Lefèvre", "fr"),
)

# Given name → the name a patient asks to be called.
NICKNAMES = {
    "William": "Bill",
    "Robert": "Bob",
    "Richard": "Rick",
    "Elizabeth": "Liz",
    "Katherine": "Kate",
    "Catherine": "Cathy",
    "Jennifer": "Jen",
    "Michael": "Mike",
    "Christopher": "Chris",
    "Alexander": "Alex",
    "Margaret": "Maggie",
    "Patricia": "Patty",
    "Rebecca": "Becky",
    "Samantha": "Sam",
    "Thomas": "Tom",
    "Joseph": "Joe",
    "Daniel": "Dan",
    "Nicholas": "Nick",
    "Jonathan": "Jon",
    "Anthony": "Tony",
    "James": "Jim",
    "Benjamin": "Ben",
    "Victoria": "Tori",
    "José": "Pepe",
    "Francisco": "Paco",
    "Guadalupe": "Lupe",
    "Alejandro": "Alex",
    "Roberto": "Beto",
    "Eduardo": "Lalo",
    "Guillermo": "Memo",
    "Jesús": "Chuy",
    "Ignacio": "Nacho",
    "Dolores": "Lola",
    "Concepción": "Conchita",
}
# Vietnamese and Chinese patients often go by an English name at the front desk.
ENGLISH_NAMES = (
    "Helen", "Tina", "Kevin", "Jenny", "David", "Amy", "Eric", "Vivian", "Tony", "Lily",
)  # fmt: skip

# Which locales' patients speak which language at the desk (language, probability).
LOCALE_LANGUAGE = {
    "es_MX": ("es", 0.55),
    "vi_VN": ("vi", 0.45),
    "zh_CN": ("zh", 0.4),
    "pt_BR": ("pt", 0.45),
    "fr_FR": ("fr", 0.25),
}

DO_NOT_CONTACT_REASONS = (
    "Asked at the front desk not to be contacted",
    "Guardian's request",
    "Contact through the care coordinator only",
    "Bounced e-mail and disconnected phone; verify details in person",
)


@dataclass(frozen=True)
class DemoFollowupType:
    code: str
    name: str
    value: int  # priority among equally overdue follow-ups


FOLLOWUP_TYPES: tuple[DemoFollowupType, ...] = (
    DemoFollowupType("hygiene-recall", "Hygiene recall", 80),
    DemoFollowupType("periodic-exam-recall", "Periodic exam recall", 70),
    DemoFollowupType("pt-re-evaluation", "PT re-evaluation", 90),
    DemoFollowupType("pt-maintenance", "PT maintenance check-in", 50),
    DemoFollowupType("membership-review", "Membership review", 40),
)


@dataclass(frozen=True)
class DemoCadence:
    """A cadence rule, scoped to the demo locations of one kind."""

    name: str
    followup_type: str  # DemoFollowupType.code
    interval: tuple[int, str]  # (value, CadenceRule.Unit)
    satisfying: tuple[str, ...]  # appointment type codes
    kind: str
    triggers: tuple[str, ...] = ()  # appointment type codes; none for a discharge rule
    event: str = "completed"
    outreach_plan: str = "Standard recall"
    max_attempts: int = 3
    lapse_after_days: int = 180


CADENCES: tuple[DemoCadence, ...] = (
    DemoCadence(
        "Hygiene recall, 6 months",
        "hygiene-recall",
        (6, "months"),
        satisfying=("hygiene-cleaning",),
        kind=DENTAL,
        triggers=("hygiene-cleaning",),
    ),
    DemoCadence(
        "Periodic exam, 12 months",
        "periodic-exam-recall",
        (12, "months"),
        satisfying=("periodic-exam", "comprehensive-exam"),
        kind=DENTAL,
        triggers=("comprehensive-exam", "periodic-exam"),
    ),
    # A check two weeks after discharge that the home program holds up.
    DemoCadence(
        "PT re-evaluation, 14 days after discharge",
        "pt-re-evaluation",
        (14, "days"),
        satisfying=("pt-re-evaluation",),
        kind=PHYSICAL_THERAPY,
        event="discharged",
        outreach_plan="PT re-eval",
        lapse_after_days=30,
    ),
    DemoCadence(
        "PT maintenance check-in, 90 days",
        "pt-maintenance",
        (90, "days"),
        satisfying=("pt-treatment-session", "pt-initial-evaluation"),
        kind=PHYSICAL_THERAPY,
        triggers=("pt-discharge-visit",),
        outreach_plan="PT re-eval",
        lapse_after_days=90,
    ),
    DemoCadence(
        "Annual membership review",
        "membership-review",
        (1, "years"),
        satisfying=("membership-review",),
        kind=WELLNESS,
        triggers=("membership-review",),
        outreach_plan="Membership renewal",
        lapse_after_days=90,
    ),
)

# What staff note after a call about a recall (the outcome is recorded separately).
ATTEMPT_NOTES = {
    "declined": (
        "Busy season at work; asked us to call again after the holidays.",
        "Will book online once the new insurance card arrives.",
        "Prefers to wait until the spring.",
    ),
    "left_message": (
        "Left the office number and the next open Tuesday slots.",
        "Voicemail full at first, left a short message on the second try.",
    ),
    "no_answer": ("", "", "Rang out; no voicemail set up."),
}


# Recall outreach plans the cadences above name ("Standard recall" ships with the
# app); steps are days from the due date and a channel.
OUTREACH_PLANS: dict[str, list[dict[str, int | str]]] = {
    "PT re-eval": [{"days": -3, "channel": "preferred"}, {"days": 4, "channel": "sms"}],
    "Membership renewal": [
        {"days": -30, "channel": "email"},
        {"days": -7, "channel": "email"},
        {"days": 3, "channel": "preferred"},
    ],
}
# A PT clinic reminds of first evaluations a day ahead, by the patient's channel.
PT_EVALUATION_REMINDERS = [
    {"minutes_before": 24 * 60, "channel": "preferred"},
    {"minutes_before": 2 * 60, "channel": "sms"},
]
# Texts patients sent back that no keyword covers: they wait for staff.
INBOX_REPLIES = (
    "Can I move this to Thursday afternoon?",
    "Running about 10 minutes late, sorry!",
    "Is parking validated?",
    "Who is this?",
    "My daughter will come instead of me, is that ok",
    "Thanks, see you then",
)
