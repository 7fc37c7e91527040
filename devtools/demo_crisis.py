"""The crisis of ``make run``'s demo: what a community manager opens the review console for.

A few days of ordinary traffic between the demo business (the number of Meta's samples, tests/data/whatsapp) and
five customers, in French and English, in both directions (the business writes from the WhatsApp Business app:
``smb_message_echoes``), with delivery statuses; and in it, today, the crisis:

1. Camille Martin confirms an order in writing, then deletes the confirmation for everyone (a Coexistence
   ``revoke``);
2. the business quotes her a price ten times too low, then edits it (an echoed ``edit``, within Meta's 15 minutes);
3. Léa Dubois sends a photo of a parcel damaged on arrival, then deletes it for everyone. The photo is
   demo_media.PARCEL_PHOTO_ID, which the Graph API stand-in serves (``--seed``), and the webhook carries its hash,
   so the archiver archives the file as it would a real one.

:func:`crisis_webhooks` gives the webhook bodies in the order to send them, encoded as Meta sends them (ASCII,
``\\uXXXX`` and ``\\/`` escapes), ready to sign. Every time is relative to ``now`` and every message id carries it,
so each run of the demo archives a crisis of its own beside the earlier runs' (:func:`crisis_messages` names the
run's ids). Among the ordinary messages are two texts that are HTML (:data:`MARKUP_TEXTS`): test material for
pages that show messages, which must show them as text.

Nobody here is a real person: the names are invented and the numbers lie in ranges kept for fiction (ARCEP's
06 39 98 xx xx in France, 555-01xx in North America, Ofcom's 07700 900xxx in the United Kingdom).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

from devtools.demo_media import GENERATED_MEDIA, PARCEL_PHOTO_ID, demo_sha256
from services.tools.loadgen import webhook_body
from services.tools.replay import meta_encode

# The business of Meta's samples, which the rest of the demo uses too (devrun.DEMO_PHONE_NUMBER_ID).
WABA_ID: Final = "102290129340398"
PHONE_NUMBER_ID: Final = "106540352242922"
DISPLAY_PHONE_NUMBER: Final = "15550783881"

MINUTE: Final = 60
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR


@dataclass(frozen=True, slots=True)
class Customer:
    """A fictional customer of the demo business: the profile name and number their webhooks carry."""

    name: str
    wa_id: str


CAMILLE: Final = Customer("Camille Martin", "33639980001")
LEA: Final = Customer("Léa Dubois", "33639980002")
HUGO: Final = Customer("Hugo Bernard", "33639980003")
EMILY: Final = Customer("Emily Carter", "12025550143")
OLIVER: Final = Customer("Oliver Hughes", "447700900123")
CUSTOMERS: Final = (CAMILLE, LEA, HUGO, EMILY, OLIVER)

ORDER_CONFIRMATION: Final = "Je confirme la commande n° 4471 : 40 unités, livraison à l'entrepôt vendredi. Merci !"
WRONG_PRICE: Final = "Le prix est de 1 200 € HT pour l'ensemble."
CORRECTED_PRICE: Final = "Le prix est de 12 000 € HT pour l'ensemble."
PHOTO_CAPTION: Final = "Photo du colis abîmé à la réception"
# Test material, sent by Oliver: HTML (an XSS probe) that a page showing messages must show as text.
MARKUP_TEXTS: Final = ('<script>alert("xss")</script>', "<img src=x onerror=alert(1)>")
# What to type into the console's search: each finds messages of this demo (case and accents are ignored).
SEARCH_KEYWORD: Final = "commande"
SEARCH_KEYWORDS: Final = (SEARCH_KEYWORD, "electricite", "remboursement", "code promo", "refund")

# When the crisis happened, in seconds before ``now``.
_PRICE_AGO: Final = 2 * HOUR + 50 * MINUTE
_ORDER_AGO: Final = 2 * HOUR + 42 * MINUTE
_PRICE_EDIT_AGO: Final = 2 * HOUR + 38 * MINUTE  # 12 minutes after the price: Meta allows edits for 15
_ORDER_REVOKE_AGO: Final = 1 * HOUR  # deleting for everyone is allowed for 2 days
_PHOTO_AGO: Final = 45 * MINUTE
_PHOTO_REVOKE_AGO: Final = 25 * MINUTE


class _Line(NamedTuple):
    """One ordinary text message of the demo's traffic."""

    ago_s: int  # seconds before ``now``
    customer: Customer
    by_customer: bool  # else sent by the business from the WhatsApp Business app (an echo)
    text: str
    read_after_s: int | None = None  # a business message: delivered, then read this long after it was sent


# The ordinary traffic around the crisis, each conversation in its own order (crisis_webhooks sorts by time).
_ORDINARY: Final = (
    _Line(3 * DAY + 5 * HOUR, HUGO, True, "Bonjour, la machine est-elle livrée avec son câble d'alimentation ?"),
    _Line(3 * DAY + 4 * HOUR + 40 * MINUTE, HUGO, False, "Bonjour Hugo, oui, le câble (2 m) est fourni."),
    _Line(3 * DAY + 4 * HOUR + 30 * MINUTE, HUGO, True, "Électricité : faut-il prévoir une prise 32 A ?"),
    _Line(
        3 * DAY + 4 * HOUR + 10 * MINUTE,
        HUGO,
        False,
        "Une prise 16 A suffit. Notre technicien vérifie l'électricité du local à la mise en service.",
        read_after_s=5 * MINUTE,
    ),
    _Line(3 * DAY + 4 * HOUR, HUGO, True, "Parfait, merci pour la réponse rapide."),
    _Line(2 * DAY + 20 * HOUR, EMILY, True, "Hi, I sent the blue chair back last week. When will I get my refund?"),
    _Line(
        2 * DAY + 19 * HOUR,
        EMILY,
        False,
        "Hello Emily, your refund was approved today: allow 3 to 5 business days.",
        read_after_s=20 * MINUTE,
    ),
    _Line(2 * DAY + 18 * HOUR, EMILY, True, "Thanks! Could I get a promo code for my next order?"),
    _Line(2 * DAY + 17 * HOUR + 50 * MINUTE, EMILY, False, "Of course: WELCOME10 gives you 10% off."),
    _Line(2 * DAY + 17 * HOUR + 45 * MINUTE, EMILY, True, "Great, have a nice day!"),
    _Line(
        2 * DAY + 6 * HOUR, CAMILLE, True, "Bonjour, avez-vous un code promo pour une commande de plus de 30 unités ?"
    ),
    _Line(
        2 * DAY + 5 * HOUR + 30 * MINUTE,
        CAMILLE,
        False,
        "Bonjour Camille, oui : le code promo PRO15 donne 15 % de remise dès 30 unités.",
    ),
    _Line(2 * DAY + 5 * HOUR, CAMILLE, True, "Super, je reviens vers vous pour un devis."),
    _Line(1 * DAY + 22 * HOUR, OLIVER, True, "Hello, do you deliver to Manchester?"),
    _Line(1 * DAY + 21 * HOUR + 30 * MINUTE, OLIVER, False, "Hi Oliver, yes: anywhere in the UK within 5 days."),
    _Line(1 * DAY + 21 * HOUR, OLIVER, True, MARKUP_TEXTS[0]),
    _Line(1 * DAY + 20 * HOUR + 59 * MINUTE, OLIVER, True, MARKUP_TEXTS[1]),
    _Line(1 * DAY + 20 * HOUR + 30 * MINUTE, OLIVER, False, "Sorry, we did not understand. How can we help?"),
    _Line(1 * DAY + 20 * HOUR, OLIVER, True, "Sorry, my nephew was playing with my phone. Never mind!"),
    _Line(
        1 * DAY + 3 * HOUR, LEA, True, "Bonjour, ma commande n° 4390 est arrivée incomplète : il manque deux cartons."
    ),
    _Line(1 * DAY + 2 * HOUR, LEA, False, "Bonjour Léa, toutes nos excuses ! Nous envoyons les deux cartons demain."),
    _Line(1 * DAY + 1 * HOUR, LEA, True, "Merci. Si ce n'est pas possible, je préfère un remboursement."),
    _Line(1 * DAY, LEA, False, "C'est noté : le remboursement de 86,40 € sera fait sous 5 jours ouvrés si besoin."),
    _Line(3 * HOUR, CAMILLE, True, "Bonjour, quel est votre prix pour 40 unités, livraison comprise ?"),
    _Line(2 * HOUR + 35 * MINUTE, CAMILLE, False, "Toutes nos excuses, le premier prix était une erreur de saisie."),
    _Line(30 * MINUTE, CAMILLE, False, "Camille, votre confirmation a disparu : la commande est-elle annulée ?"),
    _Line(20 * MINUTE, LEA, False, "Léa, nous ne voyons plus votre photo : pouvez-vous nous la renvoyer ?"),
    _Line(10 * MINUTE, HUGO, True, "Bonjour, la machine est installée et fonctionne. Merci à votre technicien !"),
    _Line(8 * MINUTE, HUGO, False, "Merci Hugo, bonne journée !", read_after_s=2 * MINUTE),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CrisisMessages:
    """The message ids of one run's crisis."""

    order: str  # Camille's order confirmation
    order_revoke: str  # her deleting it for everyone
    price: str  # the business's wrong price
    price_edit: str  # the business's edit of it
    photo: str  # Léa's photo of the damaged parcel
    photo_revoke: str  # her deleting it for everyone


def crisis_messages(now: int) -> CrisisMessages:
    """The crisis's message ids in the run of ``now`` (the same as :func:`crisis_webhooks` of ``now`` carries)."""

    def wamid(label: str) -> str:
        return f"wamid.DEMO-CRISIS-{label}-{now}"

    return CrisisMessages(
        order=wamid("ORDER"),
        order_revoke=wamid("ORDER-REVOKE"),
        price=wamid("PRICE"),
        price_edit=wamid("PRICE-EDIT"),
        photo=wamid("PHOTO"),
        photo_revoke=wamid("PHOTO-REVOKE"),
    )


def crisis_webhooks(now: int) -> list[bytes]:
    """The demo's webhook bodies, oldest first: the ordinary traffic with the crisis in it (module docstring).

    Pure: the same ``now`` gives the same bytes."""
    ids = crisis_messages(now)
    price_sent, order_sent = now - _PRICE_AGO, now - _ORDER_AGO
    timeline = _Timeline()
    timeline.business(price_sent, CAMILLE, ids.price, _text(WRONG_PRICE))
    timeline.status(price_sent + 3, CAMILLE, ids.price, "delivered")
    timeline.status(order_sent - MINUTE, CAMILLE, ids.price, "read")  # she read it, then confirmed
    timeline.customer(order_sent, CAMILLE, ids.order, _text(ORDER_CONFIRMATION))
    timeline.business(now - _PRICE_EDIT_AGO, CAMILLE, ids.price_edit, _edit(ids.price, CORRECTED_PRICE))
    timeline.customer(now - _ORDER_REVOKE_AGO, CAMILLE, ids.order_revoke, _revoke(ids.order))
    timeline.customer(now - _PHOTO_AGO, LEA, ids.photo, _photo())
    timeline.customer(now - _PHOTO_REVOKE_AGO, LEA, ids.photo_revoke, _revoke(ids.photo))
    for number, line in enumerate(_ORDINARY):
        sent, wamid = now - line.ago_s, f"wamid.DEMO-{now}-{number:02d}"
        if line.by_customer:
            timeline.customer(sent, line.customer, wamid, _text(line.text))
            continue
        timeline.business(sent, line.customer, wamid, _text(line.text))
        if line.read_after_s is not None:
            timeline.status(sent + 2, line.customer, wamid, "delivered")
            timeline.status(sent + line.read_after_s, line.customer, wamid, "read")
    return timeline.bodies()


class _Timeline:
    """Webhook bodies, each with the time of what it reports."""

    def __init__(self) -> None:
        self._entries: list[tuple[int, bytes]] = []

    def customer(self, at: int, customer: Customer, wamid: str, content: dict[str, object]) -> None:
        """A message from the customer (``messages``, with their contact entry)."""
        message = {"from": customer.wa_id, "id": wamid, "timestamp": str(at), **content}
        contact = {"profile": {"name": customer.name}, "wa_id": customer.wa_id}
        self._add(at, "messages", {"contacts": [contact], "messages": [message]})

    def business(self, at: int, customer: Customer, wamid: str, content: dict[str, object]) -> None:
        """A message the business sent the customer from the WhatsApp Business app (``smb_message_echoes``)."""
        echo = {"from": DISPLAY_PHONE_NUMBER, "to": customer.wa_id, "id": wamid, "timestamp": str(at), **content}
        self._add(at, "smb_message_echoes", {"message_echoes": [echo]})

    def status(self, at: int, customer: Customer, wamid: str, state: str) -> None:
        """The delivery status of a business message to the customer."""
        status = {"id": wamid, "status": state, "timestamp": str(at), "recipient_id": customer.wa_id}
        self._add(at, "messages", {"statuses": [status]})

    def bodies(self) -> list[bytes]:
        """The bodies, oldest first (a stable sort: two of one second stay in the order they were added)."""
        return [body for _, body in sorted(self._entries, key=lambda entry: entry[0])]

    def _add(self, at: int, field: str, value: dict[str, object]) -> None:
        body = webhook_body(WABA_ID, PHONE_NUMBER_ID, value, field=field, display_phone_number=DISPLAY_PHONE_NUMBER)
        self._entries.append((at, meta_encode(body)))


def _text(body: str) -> dict[str, object]:
    return {"type": "text", "text": {"body": body}}


def _revoke(original: str) -> dict[str, object]:
    return {"type": "revoke", "revoke": {"original_message_id": original}}


def _edit(original: str, body: str) -> dict[str, object]:
    """An edit as Coexistence sends it: the original's id and the whole new message."""
    return {"type": "edit", "edit": {"original_message_id": original, "message": _text(body)}}


def _photo() -> dict[str, object]:
    """The parcel photo, with the hash of the file the Graph API stand-in serves for it."""
    image = {
        "caption": PHOTO_CAPTION,
        "mime_type": GENERATED_MEDIA[PARCEL_PHOTO_ID],
        "sha256": demo_sha256(PARCEL_PHOTO_ID),
        "id": PARCEL_PHOTO_ID,
    }
    return {"type": "image", "image": image}
