"""Deterministic generator of realistic call records (shared by all benches).

Each record has 60 keys: Cyrillic strings, ints, bools, optional strings,
lists of ints, lists of strings and a list of small dicts.  1000 records
serialise to roughly 2 MB of UTF-8 JSON, i.e. one export page.
"""

from __future__ import annotations

import random
from typing import Any

FIRST = [
    "Александр",
    "Мария",
    "Дмитрий",
    "Екатерина",
    "Сергей",
    "Анна",
    "Иван",
    "Ольга",
    "Никита",
    "Татьяна",
    "Jean",
    "Ярослава",
    "Фёдор",
    "Юлия",
]
LAST = [
    "Иванов",
    "Смирнова",
    "Кузнецов",
    "Попова",
    "Васильев",
    "Петрова",
    "Соколов",
    "Михайлова",
    "Новиков",
    "Фёдорова",
    "Müller",
    "Щербаков",
]
CITIES = [
    "Москва",
    "Санкт-Петербург",
    "Новосибирск",
    "Екатеринбург",
    "Казань",
    "Нижний Новгород",
    "Челябинск",
    "Самара",
    "Омск",
    "Ростов-на-Дону",
]
DEPTS = [
    "Отдел продаж",
    "Служба поддержки",
    "Бухгалтерия",
    "Логистика",
    "Отдел качества",
    "Техническая поддержка второй линии",
]
QUEUES = ["Входящие общие", "VIP клиенты", "Возвраты", "Доставка", "Ночная смена"]
WORDS = [
    "клиент",
    "просит",
    "перезвонить",
    "завтра",
    "после",
    "обеда",
    "уточнить",
    "статус",
    "заказа",
    "доставка",
    "задерживается",
    "из-за",
    "погодных",
    "условий",
    "оператор",
    "предложил",
    "скидку",
    "на",
    "следующий",
    "заказ",
    "вопрос",
    "решён",
    "частично",
    "требуется",
    "эскалация",
    "на",
    "вторую",
    "линию",
    "номер",
    "договора",
    "проверен",
    "данные",
    "подтверждены",
]
TAGS = [
    "жалоба",
    "повторный",
    "vip",
    "возврат",
    "доставка",
    "оплата",
    "консультация",
    "спам",
    "эскалация",
    "опрос",
]
STATUSES = ["answered", "missed", "busy", "failed", "voicemail"]
DIRECTIONS = ["inbound", "outbound", "internal"]


def _phone(r: random.Random) -> str:
    return f"+7{r.randint(900, 999)}{r.randint(0, 9999999):07d}"


def _ts(r: random.Random) -> str:
    return (
        f"2024-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
        f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}+03:00"
    )


def _text(r: random.Random, lo: int, hi: int) -> str:
    return " ".join(r.choice(WORDS) for _ in range(r.randint(lo, hi))).capitalize() + "."


def make_record(r: random.Random, i: int) -> dict[str, Any]:
    rec: dict[str, Any] = {
        # 24 strings
        "call_id": f"{r.getrandbits(128):032x}",
        "session_id": f"sess-{r.getrandbits(64):016x}",
        "started_at": _ts(r),
        "answered_at": _ts(r),
        "ended_at": _ts(r),
        "direction": r.choice(DIRECTIONS),
        "status": r.choice(STATUSES),
        "caller_number": _phone(r),
        "callee_number": _phone(r),
        "caller_name": f"{r.choice(LAST)} {r.choice(FIRST)}",
        "callee_name": f"{r.choice(LAST)} {r.choice(FIRST)}",
        "operator_name": f"{r.choice(FIRST)} {r.choice(LAST)}",
        "operator_login": f"op{r.randint(1, 500):04d}",
        "department": r.choice(DEPTS),
        "queue_name": r.choice(QUEUES),
        "city": r.choice(CITIES),
        "region": r.choice(CITIES) + " область",
        "trunk": f"trunk-{r.randint(1, 9)}",
        "codec": r.choice(["PCMA", "PCMU", "G729", "opus"]),
        "hangup_cause": r.choice(["NORMAL_CLEARING", "USER_BUSY", "NO_ANSWER"]),
        "disposition": r.choice(["Продажа", "Консультация", "Жалоба", "Без результата"]),
        "summary": _text(r, 6, 14),
        "recording_url": f"https://rec.example/{r.getrandbits(64):016x}.ogg",
        "crm_deal_title": f"Сделка №{r.randint(1000, 99999)} — {r.choice(CITIES)}",
        # 3 optional strings
        "comment": _text(r, 10, 30) if r.random() < 0.7 else None,
        "transfer_reason": r.choice(DEPTS) if r.random() < 0.3 else None,
        "customer_email": f"user{r.randint(1, 10**6)}@example.ru" if r.random() < 0.5 else None,
        # 20 ints
        "id": 10_000_000 + i,
        "account_id": r.randint(1, 5000),
        "operator_id": r.randint(1, 500),
        "queue_id": r.randint(1, 40),
        "department_id": r.randint(1, 12),
        "duration_sec": r.randint(0, 3600),
        "billsec": r.randint(0, 3600),
        "wait_sec": r.randint(0, 600),
        "hold_sec": r.randint(0, 300),
        "talk_sec": r.randint(0, 3000),
        "ring_count": r.randint(0, 12),
        "transfer_count": r.randint(0, 4),
        "mos_x100": r.randint(100, 450),
        "jitter_ms": r.randint(0, 80),
        "packet_loss_ppm": r.randint(0, 20000),
        "cost_kopecks": r.randint(0, 100_000),
        "crm_deal_id": r.randint(1, 10**9),
        "csat": r.randint(1, 5),
        "started_at_unix": 1_700_000_000 + r.randint(0, 10**7),
        "ended_at_unix": 1_700_000_000 + r.randint(0, 10**7),
        # 8 bools
        "is_answered": r.random() < 0.8,
        "is_missed": r.random() < 0.2,
        "is_recorded": r.random() < 0.9,
        "is_transferred": r.random() < 0.3,
        "is_internal": r.random() < 0.1,
        "is_callback": r.random() < 0.1,
        "is_spam": r.random() < 0.05,
        "has_voicemail": r.random() < 0.1,
        # 2 lists of ints
        "segment_durations": [r.randint(1, 600) for _ in range(r.randint(1, 8))],
        "ivr_path": [r.randint(1, 9) for _ in range(r.randint(0, 5))],
        # 2 lists of strings
        "tags": r.sample(TAGS, r.randint(0, 4)),
        "dtmf": [str(r.randint(0, 9)) for _ in range(r.randint(0, 6))],
        # 1 list of small dicts
        "transfers": [
            {
                "from_operator": r.randint(1, 500),
                "to_operator": r.randint(1, 500),
                "at": _ts(r),
                "reason": r.choice(DEPTS),
            }
            for _ in range(r.randint(0, 3))
        ],
    }
    return rec


def make_records(n: int = 1000, seed: int = 42) -> list[dict[str, Any]]:
    r = random.Random(seed)
    return [make_record(r, i) for i in range(n)]


if __name__ == "__main__":
    import json

    recs = make_records()
    page = json.dumps(recs, ensure_ascii=False, separators=(",", ":")).encode()
    print("keys per record:", len(recs[0]), "page bytes:", len(page))
