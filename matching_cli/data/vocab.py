"""The words of the demo data set, and how `synthetic.py` puts them together, many rows at a time.

Every table here is indexed by small integers that the generator draws; the text of a row is then
built with Arrow string kernels over taken vocabulary arrays, never with a Python loop over rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
_SERIES = [
    ["A", "S", "X", "M", "GT-", "Pro ", "Max ", "Lite ", "Neo ", "Air ", "Z", "K"],
    ["арт. ", "Classic ", "Basic ", "Comfort ", "Style ", "Sport ", "Slim ", "Oversize "],
    ["Home ", "Classic ", "Eco ", "Premium ", "Comfort ", "серия ", "арт. ", "Nova "],
]
_COLOURS = (
    "черный белый серый синий красный зеленый бежевый розовый желтый голубой коричневый "
    "фиолетовый серебристый золотой бордовый хаки мятный оранжевый"
)
COLOURS = pa.array(_COLOURS.split())
_EXTRA_WORDS = pa.array(["новый", "оригинал", "2024", "хит продаж", "с гарантией", "premium"])
_SENTENCES = pa.array(
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


def _parse(text: str) -> list[tuple[int, str, list[list[str]]]]:
    categories = []
    for block in text.strip().split("\n\n"):
        head, *body = block.splitlines()
        level1, level2 = head.split(" > ")
        fields = [[w.strip() for w in f.split(";")] for f in " ".join(body).split("|")]
        categories.append((LEVEL1.index(level1), level2, fields))
    return categories


def _pools(groups: list[list[str]]) -> tuple[pa.Array, pa.Array, np.ndarray, np.ndarray]:
    """Concatenated words (plain and JSON-quoted) with each group's start and size."""
    flat = [w for g in groups for w in g]
    sizes = np.array([len(g) for g in groups])
    quoted = pa.array([json.dumps(w, ensure_ascii=False) for w in flat])
    return pa.array(flat), quoted, np.cumsum(sizes) - sizes, sizes


_categories = _parse(_CATEGORIES)
N_LEVEL2 = len(_categories)
LEVEL2_LEVEL1 = np.array([level1 for level1, _, _ in _categories])
_types = [(c2, *t.split("/")) for c2, (_, _, f) in enumerate(_categories) for t in f[0]]
TYPE_LEVEL2 = np.array([c2 for c2, _, _ in _types])
TYPE_NAMES, _TYPES_JSON, _, _ = _pools([[singular for _, singular, _ in _types]])
BRANDS, _BRANDS_JSON, BRAND_START, BRAND_COUNT = _pools([f[1] for _, _, f in _categories])
SIZES, _, SIZE_START, SIZE_COUNT = _pools([f[2] for _, _, f in _categories])
SERIES, _, SERIES_START, SERIES_COUNT = _pools(_SERIES)
_COLOURS_JSON = _pools([COLOURS.to_pylist()])[1]
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


@dataclass
class Words:
    """Vocabulary indices: a family's type, level-4 category, brand and model line; a product's
    model number, size and colour. Siblings share the family's words, so they look alike."""

    family_type: np.ndarray
    family_level4: np.ndarray
    family_brand: np.ndarray
    family_series: np.ndarray
    product_number: np.ndarray
    product_size: np.ndarray
    product_colour: np.ndarray


def draw_words(rng: np.random.Generator, level2: np.ndarray, products: np.ndarray) -> Words:
    """Words for families of `level2` categories with `products` products each."""
    product_family = np.repeat(np.arange(len(products)), products)
    level1, product_level2 = LEVEL2_LEVEL1[level2], level2[product_family]
    type_start = np.searchsorted(TYPE_LEVEL2, np.arange(N_LEVEL2))
    # The number steps by 10 between siblings (A14, A24...), by 1, or not at all when they differ
    # only in colour or size.
    base, step = rng.integers(1, 60, len(products)), rng.choice([0, 1, 10], len(products))
    rank = np.arange(len(product_family)) - np.repeat(np.cumsum(products) - products, products)
    return Words(
        family_type=type_start[level2] + below(rng, np.bincount(TYPE_LEVEL2)[level2]),
        family_level4=rng.integers(0, LEVEL4_PER_TYPE, len(products)),
        family_brand=BRAND_START[level2] + below(rng, BRAND_COUNT[level2]),
        family_series=SERIES_START[level1] + below(rng, SERIES_COUNT[level1]),
        product_number=base[product_family] + step[product_family] * rank,
        product_size=SIZE_START[product_level2] + below(rng, SIZE_COUNT[product_level2]),
        product_colour=rng.integers(0, len(COLOURS), len(product_family)),
    )


def below(rng: np.random.Generator, counts: np.ndarray) -> np.ndarray:
    """A uniform index below each of `counts`."""
    return (rng.random(len(counts)) * counts).astype(np.int64)


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "", null_handling="skip")


def _unless(drop: np.ndarray, values: pa.Array | pa.Scalar) -> pa.Array:
    return pc.if_else(pa.array(drop), pa.scalar(None, pa.string()), values)


def text_columns(
    rng: np.random.Generator, words: Words, families: np.ndarray, products: np.ndarray
) -> list[pa.Array]:
    """`name` and `description` of listings of these families and products.

    Listings of one product differ in word order, a missing colour and an extra word, as sellers'
    titles do; about 12% have no description, most of the others carry some HTML.
    """
    n = len(products)
    kind = TYPE_NAMES.take(words.family_type[families])
    brand = BRANDS.take(words.family_brand[families])
    model = _join(
        SERIES.take(words.family_series[families]),
        pc.cast(pa.array(words.product_number[products]), pa.string()),
    )
    size, colour = (
        SIZES.take(words.product_size[products]),
        COLOURS.take(words.product_colour[products]),
    )
    shown_colour = _unless(rng.random(n) < 0.25, colour)
    extra = _unless(rng.random(n) >= 0.15, _EXTRA_WORDS.take(rng.integers(0, 6, n)))
    orders = [
        [kind, brand, model, size, shown_colour, extra],
        [brand, model, kind, size, shown_colour, extra],
        [kind, brand, model, shown_colour, size, extra],
    ]
    joined = [pc.binary_join_element_wise(*o, " ", null_handling="skip") for o in orders]
    name = pc.choose(pa.array(rng.choice(3, n, p=[0.6, 0.25, 0.15]).astype(np.int8)), *joined)

    s1, s2 = _SENTENCES.take(rng.integers(0, 10, n)), _SENTENCES.take(rng.integers(0, 10, n))
    templates = [
        _join("<p>", name, ". ", s1, "</p><p>", s2, "</p>"),
        _join(s1, "<br>", s2, "<br>Бренд: ", brand),
        _join(
            "<ul><li>Бренд: ",
            brand,
            "</li><li>Цвет: ",
            colour,
            "</li><li>",
            size,
            "</li></ul><p>",
            s1,
            "</p>",
        ),
        _join(s1, " ", s2),
    ]
    which = pa.array(rng.choice(4, n, p=[0.35, 0.25, 0.25, 0.15]).astype(np.int8))
    return [name, _unless(rng.random(n) < 0.12, pc.choose(which, *templates))]


def attribute_columns(
    rng: np.random.Generator, words: Words, families: np.ndarray, products: np.ndarray
) -> list[pa.Array]:
    """`categories` and `characteristic_attributes_mapping` (type and brand always; colour,
    model and country often) of listings of these families and products."""
    n = len(products)
    categories = CATEGORY_JSON.take(
        words.family_type[families] * LEVEL4_PER_TYPE + words.family_level4[families]
    )
    number = pc.cast(pa.array(words.product_number[products]), pa.string())
    model = _join('["', SERIES.take(words.family_series[families]), number, '"]')
    colour = _COLOURS_JSON.take(words.product_colour[products])
    mapping = _join(
        '{"Тип": [',
        _TYPES_JSON.take(words.family_type[families]),
        '], "Бренд": [',
        _BRANDS_JSON.take(words.family_brand[families]),
        "]",
        _unless(rng.random(n) < 0.1, _join(', "Цвет товара": [', colour, "]")),
        _unless(rng.random(n) < 0.5, _join(', "Модель": ', model)),
        _unless(rng.random(n) < 0.6, pa.scalar(', "Страна-изготовитель": ["Китай"]')),
        "}",
    )
    return [categories, mapping]
