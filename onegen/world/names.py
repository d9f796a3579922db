"""Invented, pronounceable names built from syllables.

Every invented word belongs to exactly one split, decided by a stable hash of the word
(crc32, not Python's salted `hash`). The training and held-out worlds therefore never
share a name word, even though neither generator knows about the other.
"""
from __future__ import annotations

import random
import re
import zlib

SPLITS = ("train", "heldout")

# Plain English words that may appear inside names and titles ("The Silver Harbor",
# "Harvel FC"). They are shared by both splits; every other word in a name is invented.
TITLE_ADJECTIVES = (
    "Silver", "Last", "Quiet", "Red", "Hidden", "Long", "Broken", "Golden", "Distant",
    "Winter", "Summer", "Northern", "Burning", "Silent", "Lost", "Dark", "Bright", "Empty",
    "Little", "Second", "Wild", "Pale",
)
TITLE_NOUNS = (
    "Harbor", "River", "Garden", "Road", "House", "Night", "Sea", "Mountain", "Letter",
    "Bridge", "Tower", "Storm", "Mirror", "Station", "Island", "Crown", "Shadow", "Song",
    "Voyage", "Orchard", "Winter", "Summer", "Lantern", "Field", "Gate", "Harvest", "Dream",
)
ORG_WORDS = (
    "Industries", "Systems", "Motors", "Foods", "Records", "Press", "Airlines", "Textiles",
    "Works", "Shipping", "University", "Institute", "Technology", "FC", "United", "Rovers",
    "Sporting", "Athletic",
)
GLUE_WORDS = ("The", "A", "An", "of", "to", "at", "in", "and", "over", "Return", "Portrait", "View", "Dawn")

COMMON_WORDS: frozenset[str] = frozenset(
    w.lower() for w in TITLE_ADJECTIVES + TITLE_NOUNS + ORG_WORDS + GLUE_WORDS
)

# A few real English words the syllable grammar can produce; rejected so that every
# distinctive word is genuinely invented.
_REAL_WORDS = frozenset(
    "salon baron melon lemon demon canon talon felon sermon summon salmon person reason "
    "season lesson prison poison bison moron modern mason bacon tenor manor minor donor "
    "honor rumor vapor visa diva toga tuba soda coma sofa data gala lava nova saga "
    "polo solo tempo limo memo demo silo halo veto hero zero tango bingo banjo cargo "
    "motel hotel label level model novel panel petal metal medal rebel gavel camel "
    "carol coral moral mural rural total vital fatal focal local vocal tidal "
    # common given names and places, which would not read as invented
    "gary mary nora dora cora lena nina tina maria anna dana sara rosa vera ivan leon milo "
    "hugo otto bruno mario marco elena simon helen dennis boris doris moris paris rome".split()
)

_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "gr", "kr", "tr", "st", "pr", "cl", "fr", "th")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "m", "rn", "nd", "lt")

# Endings give each kind of name a recognisable shape.
_MALE_ENDINGS = ("o", "an", "el", "ius", "ar", "en", "is", "or")
_FEMALE_ENDINGS = ("a", "ine", "ia", "elle", "ina", "ora", "ette")
_FAMILY_ENDINGS = ("el", "and", "ane", "ard", "ov", "en", "ick", "ers", "ton", "mar", "ez", "berg")
_CITY_ENDINGS = ("vale", "mont", "haven", "burg", "ora", "ace", "ent", "grad", "ona", "ford", "ica", "ano")
_COUNTRY_ENDINGS = (("ia", "ian"), ("ora", "oran"), ("and", "andic"), ("esh", "eshi"), ("ary", "arian"))
_PLAIN_ENDINGS = ("a", "o", "en", "is", "ar", "el", "ix", "on", "eth", "ur")

_VALID = re.compile(r"^[A-Z][a-z]{3,10}$")
_BAD_RUN = re.compile(r"([aeiou])\1|([^aeiou])\2\2|[^aeiou]{4}")
_WORD = re.compile(r"[A-Za-z]+")


def word_split(word: str) -> str:
    """The split an invented word belongs to (stable across processes and machines)."""
    return SPLITS[zlib.crc32(word.lower().encode("utf-8")) % 2]


def stable_int(*parts: object) -> int:
    """A process-independent integer from any printable parts (for sub-seeds)."""
    return zlib.crc32(":".join(str(p) for p in parts).encode("utf-8"))


def name_words(name: str) -> list[str]:
    """The invented words of a name: its words minus the shared English vocabulary."""
    return [w for w in _WORD.findall(name) if w.lower() not in COMMON_WORDS]


class NameMaker:
    """Draws invented words of one split from a seeded `random.Random`.

    Words are never repeated across kinds (a given name is never also a city word), so
    that every name shape stays recognisable; repetition of whole names is the world
    generator's decision, not an accident of this class.
    """

    def __init__(self, rng: random.Random, split: str):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.rng = rng
        self.split = split
        self._used: set[str] = set()

    def _root(self, syllables: int) -> str:
        out = ""
        for i in range(syllables):
            onset = self.rng.choice(_ONSETS)
            if out and out[-1] not in "aeiou":
                onset = onset[0]  # keep consonant clusters between syllables short
            out += onset + self.rng.choice(_VOWELS)
            if i == syllables - 1:
                out += self.rng.choice(_CODAS)
            elif self.rng.random() < 0.35:  # inside a word, single-consonant codas only
                out += self.rng.choice(_CODAS[4:8])
        return out

    def _accept(self, word: str) -> bool:
        low = word.lower()
        return (bool(_VALID.match(word)) and not _BAD_RUN.search(low)
                and low not in COMMON_WORDS and low not in _REAL_WORDS
                and low not in self._used and word_split(word) == self.split)

    def _draw(self, endings: tuple[str, ...], syllables: tuple[int, ...]) -> str:
        for _ in range(10_000):
            root = self._root(self.rng.choice(syllables))
            ending = self.rng.choice(endings)
            if root[-1] in "aeiou" and ending[0] in "aeiou":
                root = root[:-1]
            word = (root + ending).capitalize()
            if self._accept(word):
                self._used.add(word.lower())
                return word
        raise RuntimeError("could not draw a new invented word; the name space is exhausted")

    def given(self, gender: str) -> str:
        endings = _MALE_ENDINGS if gender == "male" else _FEMALE_ENDINGS
        return self._draw(endings, (1, 2))

    def family(self) -> str:
        return self._draw(_FAMILY_ENDINGS, (1, 2))

    def city(self) -> str:
        return self._draw(_CITY_ENDINGS, (1, 2))

    def plain(self) -> str:
        """A neutral invented word for titles, companies and clubs."""
        return self._draw(_PLAIN_ENDINGS, (1, 2))

    def country(self) -> tuple[str, str]:
        """A country name and its demonym ("Veloria", "Velorian"); both in this split."""
        for _ in range(10_000):
            root = self._root(self.rng.choice((1, 2)))
            ending, demonym_ending = self.rng.choice(_COUNTRY_ENDINGS)
            if root[-1] in "aeiou":
                root = root[:-1]
            name, demonym = (root + ending).capitalize(), (root + demonym_ending).capitalize()
            if len(name) >= 5 and self._accept(name) and self._accept(demonym):
                self._used.update((name.lower(), demonym.lower()))
                return name, demonym
        raise RuntimeError("could not draw a new country name; the name space is exhausted")
