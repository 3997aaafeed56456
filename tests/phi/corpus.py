"""A labelled synthetic corpus of clinical notes, generated from a fixed seed.

Nothing here is real: every name is drawn from the detector's bundled lists or from the
held-out list below, every number is random. The values are shaped like the real thing
(so a detector must find them) but marked test-only wherever a reserved range exists:

- SSNs use areas 900-999, which the SSA never issues;
- phone and fax numbers use the fictional 555-0100..0199 lines;
- e-mail addresses and URLs use the reserved example.com/.org/.net, .test and .invalid;
- IP addresses come from the documentation ranges 192.0.2.0/24, 198.51.100.0/24,
  203.0.113.0/24 and 2001:db8::/32; MAC addresses are locally administered (x2:...);
- payment cards use the 400000 test prefix (with a valid Luhn digit), VINs and DEA
  numbers have valid check digits but random bodies, NPIs start with the 80840-Luhn rule.

The corpus is generated at test time and never committed. Gold-span conventions: a name
span holds the name only (no title, no credential, no possessive 's); a date span holds
the date without a weekday or a leading "the"; an identifier span holds the value, not
its cue word; an address is split into the street-and-city span (ADDRESS) and its ZIP.
"""

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

from app.phi.types import PhiType

SEED = 20240305
N_DOCS = 300

T = PhiType


@dataclass(frozen=True)
class Gold:
    start: int
    end: int
    type: PhiType


@dataclass
class Doc:
    text: str
    spans: list[Gold] = field(default_factory=list)


Piece = tuple[str, PhiType | None]


def _names(file: str) -> list[str]:
    data = resources.files("app.phi.data").joinpath(file).read_text(encoding="utf-8")
    return [w for line in data.splitlines() if not line.startswith("#") for w in line.split()]


# Names the detector's lists do NOT contain: recall on these measures the context and
# capitalisation rules, not the lists. Invented or rare, checked against the lists.
HELD_OUT_FIRST = (
    "Thaddea Quillon Brannagh Ottoline Zephyrine Casimir Leopoldine Ysolde Dashiell Marisela "
    "Evander Perpetua Osric Tamsin Ignatia Lysander Rosamund Peregrine Corisande Alaric Jessamine "
    "Florian Isolde Benedikta Caspian Elowen Anselm Ottavina Radomir Sunniva"
).split()
HELD_OUT_LAST = (
    "Quenneville Vandersloot Okonjo Brzeczyszczyk Tremblay-Oduya Xylander Haverkamp Ruminski "
    "Oyelaran Fitzwarren Delacroix-Ombati Szczepaniak Quarshie Vellacott Ambrosetti Kilbride "
    "Nakashima-Rueda Grzelak Trevithick Abernethy Mbeki-Torvund Pomeroy Wetherell Ostrowicz "
    "Lindqvar-Ade "
    "Coldiron Featherstonhaugh Ravensworth Blandford Ashcombe"
).split()
# Names that are also words or clinical terms.
HARD_NAMES = [
    ("Hope", "Bell"),
    ("Rose", "Grant"),
    ("Grant", "Banks"),
    ("Faith", "Rivers"),
    ("Frank", "Wells"),
    ("Will", "Hunter"),
    ("June", "Day"),
    ("Iris", "Lane"),
    ("Mark", "Price"),
    ("Grace", "Hill"),
    ("Joy", "Stone"),
    ("Olive", "Woods"),
    ("Hope", "Parkinson"),
    ("Rose", "Graves"),
    ("Bill", "Cook"),
    ("Dawn", "Brooks"),
    ("Amber", "Marsh"),
    ("Ray", "Wood"),
    ("Holly", "Moss"),
    ("Crystal", "Church"),
]
CITIES = [
    "Fairview",
    "Riverton",
    "Oakdale",
    "Millbrook",
    "Lakewood",
    "Brookside",
    "Cedar Falls",
    "Pine Hill",
    "Ashford",
    "Greenfield",
    "Westbury",
    "Harlow",
    "Springdale",
    "Maple Grove",
    "Elmwood",
    "Stonebridge",
    "Clearwater",
    "Bellmont",
    "Northfield",
    "Kingsport",
]
STREETS = [
    "Maple",
    "Oak",
    "Cedar",
    "Elm",
    "Lincoln",
    "Washington",
    "Park",
    "Lake",
    "Hill",
    "Sunset",
    "Willow",
    "Chestnut",
    "Birch",
    "Meadow",
    "River",
    "Highland",
    "Forest",
    "Spring",
    "Church",
    "Mill",
]
SUFFIXES = [
    "Street",
    "St",
    "Avenue",
    "Ave",
    "Road",
    "Rd",
    "Lane",
    "Ln",
    "Drive",
    "Dr",
    "Court",
    "Blvd",
    "Way",
    "Place",
    "Terrace",
]
STATES = ["OH", "IL", "TX", "CA", "NY", "PA", "GA", "WA", "MN", "NC", "Ohio", "Oregon"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
CONDITIONS = [
    "Bell's palsy",
    "Hodgkin lymphoma",
    "Parkinson's disease",
    "Graves' disease",
    "Cushing syndrome",
    "Crohn's disease",
    "Down syndrome",
    "Wilson disease",
    "Stevens-Johnson syndrome",
    "Addison's disease",
    "Alzheimer's dementia",
    "Kaposi sarcoma",
    "Burkitt lymphoma",
    "Wilms tumor",
    "Marfan syndrome",
    "Raynaud phenomenon",
    "Guillain-Barre syndrome",
    "Barrett's esophagus",
    "Hashimoto thyroiditis",
    "Huntington disease",
    "Turner syndrome",
    "Hunter syndrome",
    "a Baker's cyst",
    "a Mallory-Weiss tear",
    "Sjogren syndrome",
    "Meniere disease",
    "Tourette syndrome",
    "Paget disease of bone",
    "type 2 diabetes",
    "COPD",
    "CHF with EF 35%",
    "atrial fibrillation",
    "community-acquired pneumonia",
    "a Colles fracture",
    "Ewing sarcoma",
    "Horner syndrome",
    "Reiter syndrome",
    "Lyme disease",
    "Still disease",
]
FINDINGS = [
    "Murphy's sign positive.",
    "Babinski sign absent bilaterally.",
    "Homans sign negative.",
    "Foley catheter placed.",
    "Whipple procedure in the past.",
    "Apgar score 8 and 9.",
    "Glasgow Coma Scale 15.",
    "Wells score 2.",
    "Child-Pugh class B.",
    "Romberg test negative.",
    "Strength 5/5 in all extremities.",
    "2/6 systolic murmur at the left sternal border.",
    "BP 132/84, HR 92, Temp 98.6 F, SpO2 95% on room air.",
    "Pain 7/10, improved to 3/10.",
    "A1c 7.2%, eGFR 45, K 3.9 (3.5-5.0).",
    "Metoprolol 25 mg PO BID, lisinopril 10 mg daily.",
    "ICD-10 E11.9; CPT 99213.",
    "Hope for gradual recovery was discussed.",
    "Rose from the chair without help.",
    "Frank hematuria resolved.",
    "The patient will follow up in 2 weeks.",
    "May consider MRI if no improvement.",
    "Gross motor function intact.",
    "Grace period for the prior authorization applies.",
    "Tinel sign positive at the wrist.",
    "Patient smoked for 30 years, quit in 2015.",
    "Heparin 5000 units SC q8h.",
    "Follows with Cardiology at the Heart Center.",
    "Trendelenburg position used.",
    "Valsalva maneuver terminated the SVT.",
    "Holter monitor ordered.",
    "Ward round at 14:30.",
    "Seen in the Emergency Department.",
    "Dose increased in 2019.",
]


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pos = 0
        self.spans: list[Gold] = []

    def add(self, text: str, kind: PhiType | None = None) -> None:
        if kind is not None:
            self.spans.append(Gold(self.pos, self.pos + len(text), kind))
        self.parts.append(text)
        self.pos += len(text)

    def doc(self) -> Doc:
        return Doc("".join(self.parts), self.spans)


class Gen:
    """Value generators: each returns pieces ``(text, type-or-None)``."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng
        self.first = _names("first_names.txt")
        self.last = _names("surnames.txt")
        lists = {n.lower() for n in self.first + self.last}
        for n in HELD_OUT_FIRST + HELD_OUT_LAST:
            assert n.lower() not in lists and not any(p in lists for p in n.lower().split("-")), n

    # --- names ------------------------------------------------------------------------
    def _pair(self) -> tuple[str, str]:
        x = self.r.random()
        if x < 0.2:
            return self.r.choice(HARD_NAMES)
        if x < 0.35:
            return self.r.choice(HELD_OUT_FIRST), self.r.choice(HELD_OUT_LAST)
        if x < 0.4:
            return self.r.choice(HELD_OUT_FIRST), self.r.choice(self.last)
        if x < 0.45:
            return self.r.choice(self.first), self.r.choice(HELD_OUT_LAST)
        return self.r.choice(self.first), self.r.choice(self.last)

    def name(self) -> list[Piece]:
        f, last = self._pair()
        x = self.r.random()
        if x < 0.55:
            s = f"{f} {last}"
        elif x < 0.65:
            s = f"{f} {self.r.choice(string.ascii_uppercase)}. {last}"
        elif x < 0.75:
            s = f"{last}, {f}"
        elif x < 0.82:
            s = f"{f} {last}".upper()
        elif x < 0.92:
            s = f"{f} {last}".lower()
        else:
            s = f"{f} {last}-{self.r.choice(self.last)}"
        return [(s, T.NAME)]

    def first_name(self) -> list[Piece]:
        return [(self._pair()[0], T.NAME)]

    def last_name(self) -> list[Piece]:
        return [(self._pair()[1], T.NAME)]

    def hard_name(self) -> list[Piece]:
        f, last = self.r.choice(HARD_NAMES)
        s = f"{f} {last}" if self.r.random() < 0.7 else f"{f} {last}".lower()
        return [(s, T.NAME)]

    def clinician(self) -> list[Piece]:
        f, last = self._pair()
        x = self.r.random()
        if x < 0.4:
            return [(self.r.choice(["Dr. ", "Dr ", "Doctor "]), None), (last, T.NAME)]
        if x < 0.7:
            return [(self.r.choice(["Dr. ", "Dr "]), None), (f"{f} {last}", T.NAME)]
        return [
            (f"{f} {last}", T.NAME),
            (self.r.choice([", MD", ", RN", ", NP", " MD", ", PA-C", ", DO"]), None),
        ]

    # --- dates ------------------------------------------------------------------------
    def date(self) -> list[Piece]:
        r = self.r
        y, m, d = r.randint(1930, 2025), r.randint(1, 12), r.randint(1, 28)
        mon = MONTHS[m - 1]
        ab = mon[:3]
        sfx = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd"}.get(d, "th")
        forms: list[list[Piece]] = [
            [(f"{y}-{m:02d}-{d:02d}", T.DATE)],
            [(f"{m:02d}/{d:02d}/{y}", T.DATE)],
            [(f"{m}/{d}/{y % 100:02d}", T.DATE)],
            [(f"{d} {ab} {y}", T.DATE)],
            [(f"{d} {mon} {y}", T.DATE)],
            [(f"{mon} {d}{sfx}", T.DATE)],
            [(f"{mon} {d}, {y}", T.DATE)],
            [(f"{ab}. {d}, {y}", T.DATE)],
            [(f"{d}.{m}.{y % 100:02d}", T.DATE)],
            [(f"{d:02d}.{m:02d}.{y}", T.DATE)],
            [("the ", None), (f"{d}{sfx} of {mon}", T.DATE)],
            [(f"{d}{sfx} {mon} {y}", T.DATE)],
            [(f"{d:02d}-{ab.upper()}-{y}", T.DATE)],
            [(f"{ab}-{d:02d}-{y}", T.DATE)],
            [(f"{mon} {y}", T.DATE)],
            [(r.choice(["Monday", "Tuesday", "Friday"]) + ", ", None), (f"{mon} {d}", T.DATE)],
            [(f"{mon}\n{d}, {y}", T.DATE)],
            [(f"{m}/{d}/{y}", T.DATE)],
        ]
        return r.choice(forms)

    def age90(self) -> list[Piece]:
        a = self.r.randint(90, 104)
        return [
            (
                self.r.choice(
                    [
                        f"{a}-year-old",
                        f"{a} year old",
                        f"{a} yo",
                        f"{a} y/o",
                        f"{a}yo",
                        f"aged {a}",
                        f"{a}-yr-old",
                        f"{a} years old",
                    ]
                ),
                T.AGE,
            )
        ]

    def age_young(self) -> list[Piece]:
        a = self.r.randint(18, 89)
        return [(self.r.choice([f"{a}-year-old", f"{a} yo", f"{a} year old"]), None)]

    def age(self) -> list[Piece]:
        return self.age90() if self.r.random() < 0.4 else self.age_young()

    # --- contact ----------------------------------------------------------------------
    def _phone(self) -> str:
        r = self.r
        a, line = r.randint(201, 989), f"01{r.randint(0, 99):02d}"
        return r.choice(
            [
                f"({a}) 555-{line}",
                f"{a}-555-{line}",
                f"{a}.555.{line}",
                f"+1 {a} 555 {line}",
                f"{a} 555 {line}",
                f"{a}-555-\n{line}",
                f"({a})\n555-{line}",
                f"({a}) 555-{line} ext. {r.randint(1, 999)}",
                f"1-{a}-555-{line}",
                f"{a}555{line}",
            ]
        )

    def phone(self) -> list[Piece]:
        return [(self._phone(), T.PHONE)]

    def fax(self) -> list[Piece]:
        return [(self._phone(), T.FAX)]

    def email(self) -> list[Piece]:
        f, last = self._pair()
        user = self.r.choice(
            [f"{f}.{last}", f"{f[0]}{last}{self.r.randint(1, 99)}", f"{last}_{f}"]
        ).lower()
        user = re.sub(r"[^a-z0-9._-]", "", user)
        dom = self.r.choice(
            [
                "example.com",
                "example.org",
                "example.net",
                "mail.example.com",
                "clinic.test",
                "home.invalid",
            ]
        )
        return [(f"{user}@{dom}", T.EMAIL)]

    def url(self) -> list[Piece]:
        r = self.r
        return [
            (
                r.choice(
                    [
                        f"https://portal.example.org/patient/{r.randint(10000, 999999)}",
                        f"http://www.example.com/~{r.choice(self.last).lower()}",
                        f"www.example.net/records?id={r.randint(1000, 99999)}",
                        f"https://mychart.example.test/visit/{r.randint(100, 9999)}/summary",
                        f"example.org/p/{r.randint(100, 99999)}",
                    ]
                ),
                T.URL,
            )
        ]

    def ip(self) -> list[Piece]:
        r = self.r
        return [
            (
                r.choice(
                    [
                        f"192.0.2.{r.randint(1, 254)}",
                        f"198.51.100.{r.randint(1, 254)}",
                        f"203.0.113.{r.randint(1, 254)}",
                        f"2001:db8::{r.randint(1, 0xFFFF):x}",
                        f"2001:db8:{r.randint(1, 0xFFFF):x}:{r.randint(1, 0xFFFF):x}"
                        f"::{r.randint(1, 0xFF):x}",
                    ]
                ),
                T.IP,
            )
        ]

    # --- identifiers ------------------------------------------------------------------
    def _digits(self, n: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(n))

    def _code(self, n: int, alphabet: str = string.ascii_uppercase + string.digits) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    def ssn(self) -> list[Piece]:
        a, g, s = self.r.randint(900, 999), self.r.randint(1, 99), self.r.randint(1, 9999)
        return [
            (
                self.r.choice(
                    [f"{a}-{g:02d}-{s:04d}", f"{a} {g:02d} {s:04d}", f"{a}{g:02d}{s:04d}"]
                ),
                T.SSN,
            )
        ]

    def mrn(self) -> list[Piece]:
        r = self.r
        body = r.choice(
            [
                self._digits(r.randint(6, 10)),
                "MR" + self._digits(7),
                r.choice("ABCEHK") + self._digits(7),
                f"{self._digits(3)}-{self._digits(3)}-{self._digits(3)}",
            ]
        )
        if r.random() < 0.2:  # broken across a line
            cut = len(body) // 2
            body = body[:cut] + r.choice(["\n", "-\n", " \n"]) + body[cut:]
        return [(body, T.MRN)]

    def health_plan(self) -> list[Piece]:
        r = self.r
        L = "ACDEFGHJKMNPQRTUVWXY"  # noqa: N806 - MBI letters (no S, L, O, I, B, Z)
        LD = L + string.digits  # noqa: N806
        mbi = (
            f"{r.randint(1, 9)}{r.choice(L)}{r.choice(LD)}{r.randint(0, 9)}-"
            f"{r.choice(L)}{r.choice(LD)}{r.randint(0, 9)}-"
            f"{r.choice(L)}{r.choice(L)}{r.randint(0, 9)}{r.randint(0, 9)}"
        )
        return [
            (
                r.choice(
                    [
                        "".join(r.choice(string.ascii_uppercase) for _ in range(3))
                        + self._digits(9),
                        mbi,
                        mbi.replace("-", ""),
                        "W" + self._digits(9),
                        self._digits(11),
                        f"{self._digits(4)}-{self._digits(6)}",
                    ]
                ),
                T.HEALTH_PLAN,
            )
        ]

    @staticmethod
    def _luhn_digit(body: str) -> str:
        total = 0
        for i, ch in enumerate(reversed(body)):
            d = int(ch)
            if i % 2 == 0:
                d = d * 2 - 9 if d * 2 > 9 else d * 2
            total += d
        return str((10 - total % 10) % 10)

    def account(self) -> list[Piece]:
        r = self.r
        card = "400000" + self._digits(9)
        card += self._luhn_digit(card)
        return [
            (
                r.choice(
                    [
                        self._digits(r.randint(7, 12)),
                        f"{self._digits(4)}-{self._digits(5)}",
                        "A" + self._digits(8),
                        " ".join(card[i : i + 4] for i in range(0, 16, 4)),
                    ]
                ),
                T.ACCOUNT,
            )
        ]

    def _dea(self) -> str:
        r = self.r
        n = [r.randint(0, 9) for _ in range(6)]
        check = (n[0] + n[2] + n[4] + 2 * (n[1] + n[3] + n[5])) % 10
        return (
            r.choice("ABFM") + r.choice(string.ascii_uppercase) + "".join(map(str, n)) + str(check)
        )

    def license(self) -> list[Piece]:
        r = self.r
        return [
            (
                r.choice(
                    [
                        r.choice(string.ascii_uppercase) + self._digits(7),
                        self._dea(),
                        self._digits(r.randint(5, 9)),
                        f"{r.choice(['MD', 'RN', 'LPN'])}{self._digits(6)}",
                        f"{r.choice(string.ascii_uppercase)}{self._digits(3)}-{self._digits(4)}-{self._digits(4)}",
                    ]
                ),
                T.LICENSE,
            )
        ]

    def _vin(self) -> str:
        chars = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
        vals = {
            **{str(i): i for i in range(10)},
            **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
            **dict(zip("JKLMN", range(1, 6), strict=True)),
            "P": 7,
            "R": 9,
            **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
        }
        weights = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
        v = [self.r.choice(chars) for _ in range(17)]
        total = sum(vals[c] * w for c, w in zip(v, weights, strict=True))
        v[8] = "X" if total % 11 == 10 else str(total % 11)
        return "".join(v)

    def vehicle(self) -> list[Piece]:
        r = self.r
        plate = r.choice(
            [
                "".join(r.choice(string.ascii_uppercase) for _ in range(3)) + "-" + self._digits(4),
                self._digits(1)
                + "".join(r.choice(string.ascii_uppercase) for _ in range(3))
                + self._digits(3),
                "".join(r.choice(string.ascii_uppercase) for _ in range(2)) + " " + self._digits(4),
            ]
        )
        return [(plate, T.VEHICLE)]

    def vin(self) -> list[Piece]:
        return [(self._vin(), T.VEHICLE)]

    def device(self) -> list[Piece]:
        r = self.r
        mac = "02:" + ":".join(f"{r.randint(0, 255):02X}" for _ in range(5))
        return [
            (
                r.choice(
                    [
                        "SN-"
                        + "".join(
                            r.choice(string.ascii_uppercase + string.digits) for _ in range(8)
                        ),
                        "".join(r.choice(string.ascii_uppercase) for _ in range(3))
                        + self._digits(7),
                        f"(01)0{self._digits(13)}(17){r.randint(25, 30)}{r.randint(1, 12):02d}01"
                        f"(10)A{self._digits(4)}",
                        mac,
                        self._digits(15),
                        "PM" + self._digits(6) + "H",
                    ]
                ),
                T.DEVICE,
            )
        ]

    def biometric(self) -> list[Piece]:
        r = self.r
        hexs = "".join(r.choice("0123456789abcdef") for _ in range(r.choice([16, 32])))
        return [
            (
                r.choice(
                    [
                        f"FP-{self._digits(4)}-{self._code(4)}",
                        hexs,
                        "VP" + self._digits(8),
                    ]
                ),
                T.BIOMETRIC,
            )
        ]

    def str_profile(self) -> list[Piece]:
        r = self.r
        loci = ["D8S1179", "D21S11", "TH01", "FGA", "vWA", "D3S1358"]
        out: list[Piece] = []
        for i, loc in enumerate(r.sample(loci, 3)):
            if i:
                out.append(("; ", None))
            out.append((f"{loc}: {r.randint(6, 30)},{r.randint(6, 30)}", T.BIOMETRIC))
        return out

    def other_id(self) -> list[Piece]:
        r = self.r
        return [
            (
                r.choice(
                    [
                        f"S{r.randint(20, 25)}-{self._digits(6)}",
                        f"{r.randint(20, 25)}-{self._digits(7)}",
                        self._digits(6),
                        f"{self._digits(4)}-{self._code(2, string.ascii_uppercase)}",
                        "E" + self._digits(6),
                    ]
                ),
                T.ID,
            )
        ]

    # --- places -----------------------------------------------------------------------
    def street(self) -> str:
        r = self.r
        direction = r.choice(["", "N ", "West "])
        s = f"{r.randint(1, 9999)} {direction}{r.choice(STREETS)} {r.choice(SUFFIXES)}"
        if r.random() < 0.3:
            s += r.choice([", Apt 4B", " Apt. 12", ", Unit 7", ", Suite 210", " #3"])
        return s

    def address(self) -> list[Piece]:
        r = self.r
        zipc = self._digits(5) + (f"-{self._digits(4)}" if r.random() < 0.2 else "")
        return [
            (f"{self.street()}, {r.choice(CITIES)}", T.ADDRESS),
            (f", {r.choice(STATES)} ", None),
            (zipc, T.ZIP),
        ]

    def street_only(self) -> list[Piece]:
        return [(self.street(), T.ADDRESS)]

    def city(self) -> list[Piece]:
        return [(self.r.choice(CITIES), T.ADDRESS)]

    def county(self) -> list[Piece]:
        return [(self.r.choice(["Elm", "Harlow", "Ashford", "Clearwater"]) + " County", T.ADDRESS)]

    def zip(self) -> list[Piece]:
        return [(self._digits(5), T.ZIP)]

    # --- negatives --------------------------------------------------------------------
    def cond(self) -> list[Piece]:
        return [(self.r.choice(CONDITIONS), None)]

    def finding(self) -> list[Piece]:
        return [(self.r.choice(FINDINGS), None)]

    def num(self) -> list[Piece]:
        return [(str(self.r.randint(2, 40)), None)]

    def year(self) -> list[Piece]:
        return [(str(self.r.randint(1990, 2024)), None)]


TEMPLATES = [
    "Patient: {name}\nDOB: {date}\nMRN: {mrn}\n",
    "Pt {name} is a {age} with {cond} seen on {date}.",
    "{name} is a {age} presenting with {cond}. {finding}",
    "Seen by {clinician} on {date}. {finding}",
    "Referred by {clinician} for evaluation of {cond}.",
    "Mr. {last} reports worsening dyspnea since {date}. {finding}",
    "Mrs. {last} was admitted {date} and discharged {date}.",
    "patient {hard} is a {age} with {cond}.",
    "{hard} reports chest pain. {finding}",
    "Discussed plan with {hard} and her daughter {first}.",
    "Daughter {name} can be reached at {phone}.",
    "Emergency contact: {name} (son), phone {phone}.",
    "Please fax records to {fax}. Fax: {fax}",
    "Pharmacy fax {fax}; phone {phone}.",
    "Patient email: {email}. Portal: {url}",
    "Results uploaded to {url} from workstation {ip}.",
    "Login from IP address {ip} flagged by the portal.",
    "SSN: {ssn}. Insurance: Medicare MBI {plan}.",
    "Social security number {ssn} verified at registration.",
    "Member ID: {plan}; Group #: {plan}.",
    "Medicaid # {plan}, policy number {plan}.",
    "MRN {mrn}, account number {account}.",
    "Medical record number: {mrn}. Acct #: {account}.",
    "Billing account {account}; card on file {account}.",
    "Driver's license {license}. DEA # {license}.",
    "License no. {license} verified; NPI {npi}.",
    "Patient drove a car with license plate {plate}; VIN {vin}.",
    "Vehicle: plate {plate}, VIN {vin}.",
    "Pacemaker serial number {device}; implant date {date}.",
    "Insulin pump S/N {device}, device ID {device}.",
    "UDI {device} recorded in the implant log.",
    "Fingerprint template ID {bio} stored for medication cabinet access.",
    "Voiceprint hash {bio}.",
    "DNA profile: {str}.",
    "Specimen ID {oid}; accession # {oid}.",
    "Study subject ID {oid}. Employee ID {oid}.",
    "Address: {address}",
    "Lives at {address} with her husband {first}.",
    "Lives in {city} with family. Previously resided in {county}.",
    "Home: {street}, {city}. ZIP {zip}.",
    "The {age} patient {name} was seen in clinic on {date} by {clinician}.",
    "{clinician} saw the patient on {date} and {date}; follow-up {date}.",
    "DOB {date}, {age} {sex}, seen {date}.",
    "Last seen by {clinician} in {year}. {finding}",
    "Hx of {cond} since {year}. {finding}",
    "{finding} {finding} {finding}",
    "Assessment: {cond}. Plan: {finding}",
    "Nursing note: {first} ambulated in the hall with assistance. {finding}",
    "Spoke with {name} on the phone at {phone} regarding results from {date}.",
    "Signed electronically by {clinician} {date}",
    "cc: {clinician}",
    "{last}, {first} -- DOB {date} -- MRN {mrn}",
    "Pt {lname} seen today, wife {first} at bedside.",
    "Next appointment {date} at the clinic, {street}.",
]
TEMPLATES = [t.replace("{sex}", "F") for t in TEMPLATES]


def generate(seed: int = SEED, n_docs: int = N_DOCS) -> list[Doc]:
    """``n_docs`` notes, each 6-12 template sentences; the same seed gives the same corpus."""
    rng = random.Random(seed)
    g = Gen(rng)
    slots: dict[str, Callable[[], list[Piece]]] = {
        "name": g.name,
        "first": g.first_name,
        "last": g.last_name,
        "hard": g.hard_name,
        "lname": lambda: [(g.name()[0][0].lower(), T.NAME)],
        "clinician": g.clinician,
        "date": g.date,
        "age": g.age,
        "phone": g.phone,
        "fax": g.fax,
        "email": g.email,
        "url": g.url,
        "ip": g.ip,
        "ssn": g.ssn,
        "plan": g.health_plan,
        "mrn": g.mrn,
        "account": g.account,
        "license": g.license,
        "npi": lambda: [(_npi(rng), T.LICENSE)],
        "plate": g.vehicle,
        "vin": g.vin,
        "device": g.device,
        "bio": g.biometric,
        "str": g.str_profile,
        "oid": g.other_id,
        "address": g.address,
        "street": g.street_only,
        "city": g.city,
        "county": g.county,
        "zip": g.zip,
        "cond": g.cond,
        "finding": g.finding,
        "year": g.year,
    }
    docs = []
    order = list(range(len(TEMPLATES)))
    k = 0
    for _ in range(n_docs):
        b = _Builder()
        for _ in range(rng.randint(6, 12)):
            if k % len(order) == 0:
                rng.shuffle(order)
            tpl = TEMPLATES[order[k % len(order)]]
            k += 1
            for lit, slot in re.findall(r"([^{]*)(?:\{(\w+)\})?", tpl):
                if lit:
                    b.add(lit)
                if slot:
                    for text, kind in slots[slot]():
                        b.add(text, kind)
            b.add(rng.choice([" ", " ", "\n", "\n\n"]))
        docs.append(b.doc())
    return docs


def _npi(rng: random.Random) -> str:
    body = rng.choice("12") + "".join(rng.choice(string.digits) for _ in range(8))
    full = "80840" + body
    total = 0
    for i, ch in enumerate(reversed(full)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)
