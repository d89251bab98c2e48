"""How sellers spell one thing in different ways, for the demo data's words (plain Python, run once).

Each function takes the canonical word and returns a fixed number of spellings, the canonical one
first, so `vocab.py` can keep them as one Arrow array and pick a spelling per listing by index.
"""

from __future__ import annotations

import re

# Latin capitals and their Cyrillic look-alikes: "А1234" typed on a Russian keyboard.
LOOKALIKES = str.maketrans("ABCEHKMOPTX", "АВСЕНКМОРТХ")
_TRANSLIT = [
    ("sch", "ш"), ("sh", "ш"), ("ch", "ч"), ("ph", "ф"), ("th", "т"), ("oo", "у"), ("ee", "и"),
    ("x", "кс"), ("a", "а"), ("b", "б"), ("c", "к"), ("d", "д"), ("e", "е"), ("f", "ф"),
    ("g", "г"), ("h", "х"), ("i", "и"), ("j", "дж"), ("k", "к"), ("l", "л"), ("m", "м"),
    ("n", "н"), ("o", "о"), ("p", "п"), ("q", "к"), ("r", "р"), ("s", "с"), ("t", "т"),
    ("u", "у"), ("v", "в"), ("w", "в"), ("y", "и"), ("z", "з"),
]  # fmt: skip
# How Russian sellers actually write the best-known brands; the rest go letter by letter.
_CYRILLIC_BRANDS = {
    "Samsung": "Самсунг", "Xiaomi": "Сяоми", "Apple": "Эппл", "Huawei": "Хуавей",
    "Philips": "Филипс", "Bosch": "Бош", "Lenovo": "Леново", "Nike": "Найк", "Adidas": "Адидас",
    "Lego": "Лего", "Tefal": "Тефаль", "Sony": "Сони", "Asus": "Асус", "Puma": "Пума",
    "Dyson": "Дайсон", "Makita": "Макита", "Pampers": "Памперс", "Ikea": "Икеа",
}  # fmt: skip
# Units and what else sellers write for them (canonical first).
_UNITS = {
    "ГБ": ["ГБ", "GB", "Gb", "гигабайт"], "ТБ": ["ТБ", "TB", "Тб", "терабайт"],
    "Вт": ["Вт", "W", "ватт", "вт"], "мАч": ["мАч", "mAh", "мАч", "mah"],
    "мл": ["мл", "ml", "мл.", "ML"], "л": ["л", "L", "литра", "л."],
    "кг": ["кг", "kg", "кг.", "килограмм"], "г": ["г", "g", "гр", "грамм"],
    "см": ["см", "cm", "см.", "CM"], "мм": ["мм", "mm", "мм.", "MM"], "м": ["м", "m", "метров", "м."],
    "В": ["В", "V", "вольт", "v"], "шт": ["шт", "pcs", "штук", "шт."],
    "дюйма": ["дюйма", "in", "дюйм.", "inch"], "дюймов": ["дюймов", "in", "дюйм.", "inch"],
    "листов": ["листов", "л.", "листов", "sheets"], "деталей": ["деталей", "дет.", "pcs", "деталей"],
    "предметов": ["предметов", "пр.", "предм.", "предметов"],
    "предмета": ["предмета", "пр.", "предм.", "предмета"],
}  # fmt: skip
_SIZE = re.compile(r"^(.*\d)\s?(" + "|".join(sorted(_UNITS, key=len, reverse=True)) + r")$")
_CLOTHING_SIZE = re.compile(r"^(размер|р\.) (\d.*)$")
N_SIZE_FORMS = 4
COLOUR_ENGLISH = {
    "черный": "black", "белый": "white", "серый": "grey", "синий": "blue", "красный": "red",
    "зеленый": "green", "бежевый": "beige", "розовый": "pink", "желтый": "yellow",
    "голубой": "light blue", "коричневый": "brown", "фиолетовый": "purple",
    "серебристый": "silver", "золотой": "gold", "бордовый": "burgundy", "хаки": "khaki",
    "мятный": "mint", "оранжевый": "orange",
}  # fmt: skip


def cyrillic(brand: str) -> str:
    """The brand as a Russian seller may write it; a Cyrillic brand stays as it is."""
    if brand in _CYRILLIC_BRANDS:
        return _CYRILLIC_BRANDS[brand]
    if not re.search("[a-z]", brand):  # Cyrillic already, or letters read out (JBL, HP)
        return brand
    text = brand.lower()
    for latin, russian in _TRANSLIT:
        text = text.replace(latin, russian)
    return text[:1].upper() + text[1:]


def typo(word: str) -> str:
    """One slip of the keyboard: two letters swapped in the middle, or one dropped."""
    k = len(word) // 2
    if len(word) < 4 or not word[k - 1 : k + 1].isalpha():
        return word
    if len(word) % 2:
        return word[: k - 1] + word[k] + word[k - 1] + word[k + 1 :]
    return word[:k] + word[k + 1 :]


def size_forms(size: str) -> list[str]:
    """`N_SIZE_FORMS` spellings of a size: "128 ГБ", "128GB", "128 Gb", "128гигабайт"."""
    if m := _CLOTHING_SIZE.match(size):
        value = m.group(2)
        return [
            size,
            f"р-р {value}",
            f"{value} размер",
            "р." + value if size[0] == "р" else f"р. {value}",
        ]
    if m := _SIZE.match(size):
        number, unit = m.groups()
        spaced = " " if size[len(number)] == " " else ""
        names = _UNITS[unit]
        return [size] + [
            number.replace(",", ".") * (k == 2)
            + number * (k != 2)
            + (spaced if k % 2 else "")
            + names[k]
            for k in (1, 2, 3)
        ]
    return [size, size.lower(), size.replace("x", "х").replace("-", ""), size.upper()]


def colour_forms(colour: str) -> list[str]:
    return [colour, colour.capitalize(), COLOUR_ENGLISH[colour]]


def code_prefixes(n: int) -> list[str]:
    """`n` model-code prefixes made of letters that have Cyrillic look-alikes: "KM-", "A", "TX"."""
    letters = "ABCEHKMOPTX"
    singles = list(letters)
    doubles = [a + b for a in letters for b in letters if a != b]
    chosen = (singles + doubles[:: max(1, len(doubles) // (n - len(singles)))])[:n]
    return [p + "-" if i % 3 == 0 else p for i, p in enumerate(chosen)]


def code_prefix_forms(prefix: str) -> list[str]:
    """Spellings of a code's prefix, put before its number: as it is, the hyphen toggled,
    Cyrillic look-alike letters, lower case, a space for the hyphen."""
    bare = prefix.rstrip("-")
    toggled = bare if prefix.endswith("-") else bare + "-"
    return [prefix, toggled, prefix.translate(LOOKALIKES), prefix.lower(), bare + " "]
