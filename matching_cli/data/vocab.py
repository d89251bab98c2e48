"""The words of the demo data set, each with the spellings sellers use for it, as Arrow arrays.

Every table here is indexed by small integers that the generator draws (`listing_text.py`); a word
with spellings takes `FORMS` consecutive entries, its canonical spelling first.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from matching_cli.data import variants

# Level-1 > level-2 category, then three fields split by "|": product types as "singular/plural"
# (the plural is the level-3 category, the singular starts a listing's name), brands, sizes.
_CATEGORIES = """
EPG > Электроника
    Смартфон/Смартфоны; Наушники/Наушники; Планшет/Планшеты; Умные часы/Умные часы;
    Чехол для телефона/Чехлы для телефонов; Портативная колонка/Портативные колонки
  | Samsung; Xiaomi; Apple; Huawei; Honor; Realme; JBL; Sony; Tecno; Infinix
  | 64 ГБ; 128 ГБ; 256 ГБ; 512 ГБ; 8/256 ГБ; 6/128 ГБ; Bluetooth 5.3; 10000 мАч

EPG > Бытовая техника
    Пылесос/Пылесосы; Электрочайник/Электрочайники; Микроволновая печь/Микроволновые печи;
    Фен/Фены; Утюг/Утюги; Блендер/Блендеры
  | Bosch; Philips; Redmond; Polaris; Tefal; Scarlett; Vitek; Dyson; Kitfort
  | 1000 Вт; 1500 Вт; 2000 Вт; 2200 Вт; 1,7 л; 20 л; 0,6 л

EPG > Компьютерная техника
    Ноутбук/Ноутбуки; Клавиатура/Клавиатуры; Мышь компьютерная/Компьютерные мыши;
    Монитор/Мониторы; USB-флешка/USB-флешки; SSD-накопитель/SSD-накопители
  | Lenovo; Asus; Acer; HP; Logitech; Defender; Dexp; Kingston; MSI
  | 15,6 дюйма; 27 дюймов; 16 ГБ; 512 ГБ; 1 ТБ; 32 ГБ; 1920x1080; USB 3.0

EPG > Автотовары
    Видеорегистратор/Видеорегистраторы; Коврики автомобильные/Автомобильные коврики;
    Автомагнитола/Автомагнитолы; Масло моторное/Моторные масла;
    Щетка стеклоочистителя/Щетки стеклоочистителя
  | Castrol; Mobil; Shell; Lukoil; Bosch; Pioneer; 70mai; Neoline
  | 5W-30; 5W-40; 4 л; 1 л; 1 DIN; 2 DIN; 650 мм; Full HD

EPG > Строительство и ремонт
    Дрель/Дрели; Шуруповерт/Шуруповерты; Набор отверток/Наборы отверток; Краска/Краски;
    Смеситель/Смесители
  | Makita; Bosch; Dewalt; Интерскол; Зубр; Tikkurila; Dulux; Grohe
  | 18 В; 12 В; 800 Вт; 2 аккумулятора; 2,7 л; 0,9 л; 32 предмета

EPG > Спорт и отдых
    Гантели/Гантели; Коврик для йоги/Коврики для йоги; Палатка/Палатки; Велосипед/Велосипеды;
    Мяч футбольный/Мячи
  | Demix; Torres; Stern; Stels; Forward; Atemi; Nordway; Starfit
  | 2 кг; 5 кг; 10 кг; 183x61 см; 4-местная; 26 дюймов; размер 5

EPG > Хобби и творчество
    Набор для вышивания/Наборы для вышивания; Пряжа/Пряжа; Краски акриловые/Акриловые краски;
    Пазл/Пазлы; Спицы для вязания/Спицы
  | Prym; Риолис; Alize; Gamma; Невская палитра; Ravensburger; Step Puzzle; Clover
  | 100 г; 30x40 см; 12 цветов; 1000 деталей; 500 деталей; 4 мм

EPG > Канцелярские товары
    Ручка шариковая/Ручки; Тетрадь/Тетради; Ежедневник/Ежедневники;
    Карандаши цветные/Цветные карандаши; Рюкзак школьный/Школьные рюкзаки
  | Brauberg; Erich Krause; Pilot; Faber-Castell; Berlingo; Hatber; Attache; Koh-i-Noor
  | A4; A5; 48 листов; 96 листов; 24 цвета; 12 шт; 0,7 мм

EPG > Товары для животных
    Корм для кошек/Корма для кошек; Корм для собак/Корма для собак; Лежанка/Лежанки;
    Когтеточка/Когтеточки; Ошейник/Ошейники
  | Whiskas; Royal Canin; Purina One; Pedigree; Felix; Sheba; Trixie; Ferplast
  | 85 г; 400 г; 1,5 кг; 15 кг; 50x40 см; размер M; 24 шт

EPG > Детские товары
    Конструктор/Конструкторы; Кукла/Куклы; Подгузники/Подгузники; Коляска/Коляски;
    Машинка игрушечная/Игрушечные машинки
  | Lego; Hasbro; Mattel; Pampers; Huggies; Merries; Tutis; Happy Baby
  | размер 3; размер 4; 52 шт; 500 деталей; 1:24; 3 в 1; 30 см

Одежда > Одежда
    Футболка/Футболки; Платье/Платья; Джинсы/Джинсы; Куртка/Куртки; Худи/Худи; Рубашка/Рубашки
  | Zara; Befree; Gloria Jeans; Levi's; Incity; Sela; Oodji; Tom Tailor; Mango
  | размер 42; размер 44; размер 46; размер 48; размер 50; S; M; L; XL

Одежда > Обувь
    Кроссовки/Кроссовки; Ботинки/Ботинки; Туфли/Туфли; Сандалии/Сандалии; Тапочки/Тапочки
  | Nike; Adidas; Puma; Reebok; Ecco; Rieker; Kari; Ralf Ringer; New Balance
  | р. 37; р. 38; р. 39; р. 40; р. 41; р. 42; р. 43; р. 44

Одежда > Аксессуары
    Ремень/Ремни; Кошелек/Кошельки; Шапка/Шапки; Перчатки/Перчатки;
    Очки солнцезащитные/Солнцезащитные очки
  | Tommy Hilfiger; Lacoste; Calvin Klein; Ray-Ban; Guess; Fabretti; Eleganzza
  | 110 см; 120 см; натуральная кожа; one size; UV400

Одежда > Ювелирные украшения
    Кольцо/Кольца; Серьги/Серьги; Цепочка/Цепочки; Браслет/Браслеты; Подвеска/Подвески
  | Sokolov; Pandora; Sunlight; Адамас; Алькор; Красцветмет
  | серебро 925; золото 585; р. 16,5; р. 17; 45 см; 50 см; фианит

Одежда > Спортивная одежда
    Леггинсы/Леггинсы; Спортивный костюм/Спортивные костюмы; Шорты спортивные/Спортивные шорты;
    Топ спортивный/Спортивные топы
  | Demix; Nike; Adidas; Puma; Under Armour; Columbia; Kappa; Outventure
  | S; M; L; XL; XXL; размер 44; размер 48

Одежда > Нижнее белье
    Трусы/Трусы; Бюстгальтер/Бюстгальтеры; Носки/Носки; Пижама/Пижамы; Термобелье/Термобелье
  | Calzedonia; Intimissimi; Incanto; Omsa; Conte; Infinity Lingerie; Janira
  | S; M; L; 75B; 80C; р. 23-25; 5 пар

Одежда > Сумки и чемоданы
    Сумка/Сумки; Чемодан/Чемоданы; Рюкзак/Рюкзаки; Косметичка/Косметички
  | Samsonite; Xiaomi; Eberhart; Tevin; Antan; Mr.Bag
  | S; M; L; 20 л; 30 л; 65 л; экокожа

Дом и сад > Хозяйственные товары
    Губка для посуды/Губки; Мешки для мусора/Мешки для мусора; Вешалка/Вешалки;
    Контейнер для хранения/Контейнеры для хранения
  | Paclan; Fairy; Vileda; York; Freken Bok; Idea; Econova
  | 10 шт; 30 шт; 60 л; 120 л; 3 л; 5 шт

Дом и сад > Мебель
    Стул/Стулья; Стол/Столы; Полка настенная/Полки; Шкаф/Шкафы; Кресло/Кресла
  | Ikea; Hoff; Stool Group; Лазурит; Мебельград; Шатура
  | 80x60 см; 120x80 см; 2 шт; 4 шт; 180x200 см; 3 полки

Дом и сад > Посуда
    Сковорода/Сковороды; Кастрюля/Кастрюли; Кружка/Кружки; Тарелка/Тарелки;
    Набор ножей/Наборы ножей
  | Tefal; Fissman; Luminarc; Kuchenland; Rondell; Нева Металл; Pasabahce
  | 24 см; 28 см; 2,5 л; 4 л; 350 мл; 6 предметов; 6 шт

Дом и сад > Текстиль
    Постельное белье/Постельное белье; Полотенце/Полотенца; Плед/Пледы; Подушка/Подушки;
    Шторы/Шторы
  | Togas; Askona; Cleanelly; Мона Лиза; Arya; Ecotex; Ивановский текстиль
  | 1,5-спальное; 2-спальное; евро; 50x70 см; 70x140 см; 200x220 см; 150x270 см

Дом и сад > Освещение
    Лампа светодиодная/Светодиодные лампы; Люстра/Люстры; Светильник настольный/Настольные лампы;
    Гирлянда/Гирлянды
  | Gauss; Ecola; Philips; Navigator; Camelion; Эра; Citilux
  | E27 10 Вт; E14 7 Вт; GU10; 4000K; 5 м; 10 м; 3 рожка

Дом и сад > Садовая техника
    Газонокосилка/Газонокосилки; Триммер/Триммеры; Шланг садовый/Садовые шланги;
    Опрыскиватель/Опрыскиватели
  | Gardena; Huter; Patriot; Champion; Greenworks; Karcher; Makita
  | 1200 Вт; 1600 Вт; 20 м; 25 м; 5 л; 8 л; 40 В

Дом и сад > Красота и здоровье
    Шампунь/Шампуни; Крем для лица/Кремы для лица; Зубная щетка/Зубные щетки; Помада/Помады;
    Парфюмерная вода/Парфюмерия
  | Garnier; Nivea; L'Oreal Paris; Oral-B; Colgate; Vichy; La Roche-Posay; Maybelline
  | 50 мл; 100 мл; 250 мл; 400 мл; 2 шт; мягкая; 30 мл
"""
LEVEL1 = ["EPG", "Одежда", "Дом и сад"]
_LEVEL4 = [
    ["Базовые модели", "Профессиональные модели", "Наборы", "Комплектующие"],
    ["Женские", "Мужские", "Детские", "Унисекс"],
    ["Для кухни", "Для дачи", "Для дома", "Наборы"],
]
LEVEL4_PER_TYPE = 4
# Model lines by level-1 group; the product's number follows ("A54", "Classic 12", "арт. 37").
# Model lines by level-1 group: a word of the title that siblings share.
_SERIES = [
    ["Pro", "Max", "Lite", "Neo", "Air", "Plus", "Ultra", "Mini", "Smart", "Prime"],
    ["арт.", "Classic", "Basic", "Comfort", "Style", "Sport", "Slim", "Oversize"],
    ["Home", "Classic", "Eco", "Premium", "Comfort", "серия", "арт.", "Nova"],
]
_COLOURS = (
    "черный белый серый синий красный зеленый бежевый розовый желтый голубой коричневый "
    "фиолетовый серебристый золотой бордовый хаки мятный оранжевый"
)
COLOURS = pa.array(_COLOURS.split())
EXTRA_WORDS = pa.array(["новый", "оригинал", "2024", "хит продаж", "с гарантией", "premium"])
SENTENCES = pa.array(
    [
        "Отличное качество по доступной цене.",
        "Товар сертифицирован и соответствует заявленным характеристикам.",
        "Подходит для ежедневного использования.",
        "Гарантия производителя 12 месяцев.",
        "Стильный дизайн и продуманная эргономика.",
        "Упаковка надежно защищает товар при транспортировке.",
        "Перед использованием ознакомьтесь с инструкцией.",
        "Идеально подойдет в качестве подарка.",
        "Изготовлено из качественных материалов.",
        "Доставка по всей России.",
    ]
)
# The attribute that names a size, by its last word, its unit ("Размер" for none of these).
_SIZE_KEYS = [
    ("ГБ ТБ", "Объем памяти"), ("Вт", "Мощность"), ("мАч", "Емкость аккумулятора"),
    ("дюйма дюймов", "Диагональ"), ("В", "Напряжение"), ("мл л", "Объем"), ("кг г", "Вес"),
    ("см мм м", "Размеры"),
    ("шт деталей листов предмета предметов цветов цвета пар", "Количество в упаковке"),
]  # fmt: skip


def _parse(text: str) -> list[tuple[int, str, list[list[str]]]]:
    categories = []
    for block in text.strip().split("\n\n"):
        head, *body = block.splitlines()
        level1, level2 = head.split(" > ")
        fields = [[w.strip() for w in f.split(";")] for f in " ".join(body).split("|")]
        categories.append((LEVEL1.index(level1), level2, fields))
    return categories


def _size_key(size: str) -> str:
    unit = size.split()[-1].rstrip(".")
    return next((key for units, key in _SIZE_KEYS if unit in units.split()), "Размер")


def _json(words: list[str]) -> pa.Array:
    return pa.array([json.dumps(w, ensure_ascii=False) for w in words])


def _pools(groups: list[list[str]]) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Concatenated words with each group's start and size."""
    sizes = np.array([len(g) for g in groups])
    return pa.array([w for g in groups for w in g]), np.cumsum(sizes) - sizes, sizes


def _forms(words: list[str], spell) -> pa.Array:
    """`FORMS` spellings per word, the canonical one first (repeated where a word has fewer)."""
    rows = [spell(w) for w in words]
    return pa.array([r[k % len(r)] for r in rows for k in range(FORMS)])


FORMS = 5
_categories = _parse(_CATEGORIES)
N_LEVEL2 = len(_categories)
LEVEL2_LEVEL1 = np.array([level1 for level1, _, _ in _categories])
_types = [(c2, *t.split("/")) for c2, (_, _, f) in enumerate(_categories) for t in f[0]]
TYPE_LEVEL2 = np.array([c2 for c2, _, _ in _types])
_type_names = [singular for _, singular, _ in _types]
TYPE_FORMS = _forms(_type_names, lambda w: [w, variants.typo(w)])
TYPES_JSON = _json(_type_names)
_brands, BRAND_START, BRAND_COUNT = _pools([f[1] for _, _, f in _categories])
BRAND_FORMS = _forms(_brands.to_pylist(), lambda w: [w, variants.cyrillic(w), variants.typo(w)])
BRANDS_JSON = _json(_brands.to_pylist())
_sizes, SIZE_START, SIZE_COUNT = _pools([f[2] for _, _, f in _categories])
SIZE_FORMS = _forms(_sizes.to_pylist(), variants.size_forms)
SIZES_JSON = _json(_sizes.to_pylist())
SIZE_KEYS_JSON = _json([_size_key(s) for s in _sizes.to_pylist()])
SERIES, SERIES_START, SERIES_COUNT = _pools(_SERIES)
COLOUR_FORMS = _forms(COLOURS.to_pylist(), variants.colour_forms)
COLOURS_JSON = _json(COLOURS.to_pylist())
CODE_PREFIXES = variants.code_prefixes(60)
CODE_PREFIX_FORMS = _forms(CODE_PREFIXES, variants.code_prefix_forms)
# One JSON per (product type, level-4 index): few enough to encode with `json` itself.
CATEGORY_JSON = pa.array(
    [
        json.dumps(
            {"1": LEVEL1[level1], "2": level2, "3": plural, "4": _LEVEL4[level1][q]},
            ensure_ascii=False,
        )
        for c2, _, plural in _types
        for level1, level2, _ in [_categories[c2]]
        for q in range(LEVEL4_PER_TYPE)
    ]
)
