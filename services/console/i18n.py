"""English and French for the console: the language from the browser (``Accept-Language``) unless the viewer
switched, the texts from :data:`FRENCH` (English is the source), dates and numbers by Babel in the viewer's locale
and time zone.

Every text a template shows goes through ``t("…")``; tests/unit/test_console_i18n.py fails when one has no French.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_datetime, format_time
from babel.numbers import format_decimal

LOCALES: Final = ("en", "fr")
DEFAULT_LOCALE: Final = "en"


def negotiate(accept_language: str | None) -> str:
    """The first of :data:`LOCALES` the browser accepts, by its q-values; English otherwise."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        language = tag.strip().lower().split("-")[0]
        if language in LOCALES and quality > 0:
            ranked.append((-quality, position, language))
    return min(ranked)[2] if ranked else DEFAULT_LOCALE


def known_locale(value: str | None) -> str | None:
    return value if value in LOCALES else None


def zone(name: str | None, default: str) -> str:
    """``name`` if it is a time zone this machine knows, else ``default``."""
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return default
        return name
    return default


class Formatter:
    """Dates, times and numbers for one viewer."""

    def __init__(self, locale: str, timezone: str) -> None:
        self.locale = locale
        self.tz = ZoneInfo(timezone)
        self.timezone = timezone

    def local(self, moment: dt.datetime | int | float | None) -> dt.datetime | None:
        if moment is None:
            return None
        if isinstance(moment, int | float):
            moment = dt.datetime.fromtimestamp(moment, dt.UTC)
        return moment.astimezone(self.tz)

    def datetime(self, moment: dt.datetime | int | float | None) -> str:
        local = self.local(moment)
        return "" if local is None else format_datetime(local, "medium", tzinfo=self.tz, locale=self.locale)

    def time(self, moment: dt.datetime | int | float | None) -> str:
        local = self.local(moment)
        return "" if local is None else format_time(local, "short", tzinfo=self.tz, locale=self.locale)

    def date(self, moment: dt.datetime | int | float | None) -> str:
        local = self.local(moment)
        return "" if local is None else format_date(local, "full", locale=self.locale)

    def iso(self, moment: dt.datetime | int | float | None) -> str:
        local = self.local(moment)
        return "" if local is None else local.isoformat()

    def number(self, value: float) -> str:
        return format_decimal(value, locale=self.locale)


def translator(locale: str) -> Callable[..., str]:
    """``t(text, **values)``: the text in ``locale``, with ``{name}`` placeholders filled in."""
    table = FRENCH if locale == "fr" else {}

    def t(text: str, /, **values: object) -> str:
        translated = table.get(text, text)
        return translated.format(**values) if values else translated

    return t


# English source text -> French. Placeholders ({name}) are kept as they are.
FRENCH: Final[dict[str, str]] = {
    # layout
    "wa-archive review console": "wa-archive — console de consultation",
    "Skip to content": "Aller au contenu",
    "Main navigation": "Navigation principale",
    "Search": "Recherche",
    "Legal holds": "Conservations légales",
    "Erasure requests": "Demandes d'effacement",
    "Audit log": "Journal d'audit",
    "Retention": "Conservation",
    "Sign out": "Se déconnecter",
    "Signed in as {name} ({role})": "Connecté·e en tant que {name} ({role})",
    "reader": "lecteur",
    "dpo": "DPO",
    "Language": "Langue",
    "Change language": "Changer de langue",
    "English": "English",
    "Français": "Français",
    "Times are shown in {zone}.": "Heures affichées dans le fuseau {zone}.",
    # sign-in
    "Sign in": "Connexion",
    "Name": "Nom",
    "Access token": "Jeton d'accès",
    "Sign in with the name and token your administrator gave you.": (
        "Connectez-vous avec le nom et le jeton fournis par votre administrateur."
    ),
    "The name or the token is wrong.": "Le nom ou le jeton est incorrect.",
    "Your session has ended. Sign in again.": "Votre session a expiré. Reconnectez-vous.",
    "You are signed out.": "Vous êtes déconnecté·e.",
    # search
    "Search the archive": "Rechercher dans l'archive",
    "Search shows metadata only. Content is shown once you give a reason for opening a conversation.": (
        "La recherche n'affiche que des métadonnées. Le contenu s'affiche une fois donné le motif d'ouverture d'une "
        "conversation."
    ),
    "Words in the messages": "Mots des messages",
    "Case and accents are ignored: electricite finds Électricité.": (
        "Les majuscules et les accents sont ignorés : electricite trouve Électricité."
    ),
    "Person": "Personne",
    "Phone number, business-scoped user id or username": (
        "Numéro de téléphone, identifiant utilisateur propre à l'entreprise ou nom d'utilisateur"
    ),
    "Business number (phone number id)": "Numéro de l'entreprise (phone number id)",
    "From": "Du",
    "To": "Au",
    "Kind": "Catégorie",
    "Type": "Type",
    "Any": "Tous",
    "Deleted for everyone only": "Supprimés pour tous uniquement",
    "Edited only": "Modifiés uniquement",
    "Results": "Résultats",
    "No message matches.": "Aucun message ne correspond.",
    "{count} message(s) in {conversations} conversation(s).": (
        "{count} message(s) dans {conversations} conversation(s)."
    ),
    "{count} candidate message(s) in {conversations} conversation(s).": (
        "{count} message(s) candidat(s) dans {conversations} conversation(s)."
    ),
    "Open conversation {ref} at the first message with your words": (
        "Ouvrir la conversation {ref} au premier message qui contient vos mots"
    ),
    "Only the first {limit} results are shown: narrow the search.": (
        "Seuls les {limit} premiers résultats sont affichés : affinez la recherche."
    ),
    "Keyword results are candidates: the messages that contain the words are confirmed and highlighted when the "
    "conversation is opened.": (
        "Les résultats par mots sont des candidats : les messages qui contiennent les mots sont confirmés et "
        "surlignés à l'ouverture de la conversation."
    ),
    "Conversation {ref}": "Conversation {ref}",
    "Time": "Heure",
    "Direction": "Sens",
    "Business number": "Numéro de l'entreprise",
    "Badges": "Marques",
    "Open": "Ouvrir",
    "Open conversation {ref} at this message": "Ouvrir la conversation {ref} à ce message",
    "received": "reçu",
    "sent": "envoyé",
    "deleted for everyone": "supprimé pour tous",
    "edited": "modifié",
    "Give the dates as YYYY-MM-DD.": "Indiquez les dates au format AAAA-MM-JJ.",
    # kinds and types
    "message": "message",
    "echo": "message de l'entreprise (app)",
    "history": "historique",
    "outbound": "message de l'entreprise (API)",
    "status": "statut",
    "call": "appel",
    "text": "texte",
    "image": "image",
    "audio": "audio",
    "video": "vidéo",
    "document": "document",
    "sticker": "autocollant",
    "location": "position",
    "contacts": "contacts",
    "interactive": "réponse interactive",
    "button": "bouton",
    "order": "commande",
    "reaction": "réaction",
    "template": "modèle",
    "edit": "modification",
    "revoke": "suppression",
    # reason
    "Why do you open this conversation?": "Pourquoi ouvrez-vous cette conversation ?",
    "Reading a person's messages is recorded in the audit log with your name, the time and this reason. Nothing is "
    "shown before you give it.": (
        "La lecture des messages d'une personne est inscrite au journal d'audit avec votre nom, l'heure et ce motif. "
        "Rien n'est affiché avant."
    ),
    "Reason": "Motif",
    "For example: customer dispute about a delivery": "Par exemple : litige client sur une livraison",
    "Case reference (optional)": "Référence du dossier (facultatif)",
    "Open the conversation": "Ouvrir la conversation",
    "Cancel": "Annuler",
    "A reason of at least 3 characters is required.": "Un motif d'au moins 3 caractères est requis.",
    # timeline
    "Reason given: {reason}": "Motif donné : {reason}",
    "Messages {first}–{last} of {total}": "Messages {first} à {last} sur {total}",
    "Older messages": "Messages plus anciens",
    "Newer messages": "Messages plus récents",
    "This conversation has no message left.": "Cette conversation ne contient plus de message.",
    "{count} record(s) of this person were erased and cannot be shown.": (
        "{count} enregistrement(s) de cette personne ont été effacés et ne peuvent être affichés."
    ),
    "Customer": "Client",
    "Business": "Entreprise",
    "Matches your words": "Contient vos mots",
    "in a group": "dans un groupe",
    "Deleted for everyone by the customer at {time} ({minutes} minutes after it was sent)": (
        "Supprimé pour tous par le client à {time} ({minutes} minutes après l'envoi)"
    ),
    "Deleted for everyone by the business at {time} ({minutes} minutes after it was sent)": (
        "Supprimé pour tous par l'entreprise à {time} ({minutes} minutes après l'envoi)"
    ),
    "Deleted for everyone by the customer": "Supprimé pour tous par le client",
    "Deleted for everyone by the business": "Supprimé pour tous par l'entreprise",
    "Original content": "Contenu d'origine",
    "Edited {count} time(s)": "Modifié {count} fois",
    "History": "Historique",
    "Original at {time}": "Original à {time}",
    "Edited at {time}": "Modifié à {time}",
    "In reply to": "En réponse à",
    "a message not in the archive": "un message absent de l'archive",
    "Reactions": "Réactions",
    "Delivery": "Distribution",
    "delivered": "distribué",
    "read": "lu",
    "played": "écouté",
    "failed": "échec",
    "deleted": "supprimé",
    "Download {name}": "Télécharger {name}",
    "Image of the message": "Image du message",
    "The media file was not archived ({why}).": "Le fichier n'a pas été archivé ({why}).",
    "The media file is not archived yet.": "Le fichier n'est pas encore archivé.",
    "Location": "Position",
    "Contact card": "Fiche contact",
    "Order": "Commande",
    "{quantity} × {item} at {price} {currency}": "{quantity} × {item} à {price} {currency}",
    "Template {name}": "Modèle {name}",
    "Reply: {title}": "Réponse : {title}",
    "Call": "Appel",
    "Unsupported message": "Message non pris en charge",
    "This record could not be read ({why}).": "Cet enregistrement n'a pas pu être lu ({why}).",
    "Edit of a message that is not in the archive": "Modification d'un message absent de l'archive",
    "Deletion of a message that is not in the archive": "Suppression d'un message absent de l'archive",
    "Sent by the business from the WhatsApp Business app": "Envoyé par l'entreprise depuis l'app WhatsApp Business",
    "Sent by the business through the API": "Envoyé par l'entreprise via l'API",
    "Back to the search": "Retour à la recherche",
    # DPO pages
    "Active legal holds": "Conservations légales en cours",
    "Released holds": "Conservations levées",
    "No active hold.": "Aucune conservation en cours.",
    "Case": "Dossier",
    "Scope": "Portée",
    "People": "Personnes",
    "Created by": "Créée par",
    "Created": "Créée",
    "Released": "Levée",
    "Release": "Lever",
    "Release hold {case}": "Lever la conservation {case}",
    "Place a hold": "Placer une conservation",
    "Case reference": "Référence du dossier",
    "WABA id": "Identifiant WABA",
    "Contact (for a contact hold)": "Contact (pour une conservation d'un contact)",
    "contact": "contact",
    "phone_number": "numéro",
    "waba": "compte WABA",
    "conversation": "conversation",
    "group": "groupe",
    "Group id (for a group hold)": "Identifiant du groupe (pour une conservation d'un groupe)",
    "Hold placed: {case}.": "Conservation placée : {case}.",
    "Hold released: {case}.": "Conservation levée : {case}.",
    "Erasure requests after the release: {list}.": "Demandes d'effacement après la levée : {list}.",
    "Request": "Demande",
    "State": "État",
    "Received": "Reçue",
    "Deadline": "Échéance",
    "Overdue": "En retard",
    "Blocking holds": "Conservations bloquantes",
    "Decision": "Décision",
    "No erasure request.": "Aucune demande d'effacement.",
    "Register an erasure request": "Enregistrer une demande d'effacement",
    "Request reference": "Référence de la demande",
    "Erase": "Effacer",
    "Refuse": "Refuser",
    "Legal ground": "Motif légal",
    "Extend by two months": "Prolonger de deux mois",
    "Reason told to the person": "Motif communiqué à la personne",
    "Erasure {ref}: {status}.": "Effacement {ref} : {status}.",
    "completed": "terminée",
    "blocked": "bloquée",
    "in_progress": "en cours",
    "refused": "refusée",
    "extended": "prolongée",
    "Filter": "Filtrer",
    "Actor": "Acteur",
    "Action": "Action",
    "Pseudonym": "Pseudonyme",
    "Records": "Enregistrements",
    "Details": "Détails",
    "No audit row matches.": "Aucune ligne d'audit ne correspond.",
    "Retention dry run": "Simulation de la conservation",
    "A dry run lists what a real run would delete today, and changes nothing.": (
        "Une simulation liste ce qu'une vraie exécution supprimerait aujourd'hui, sans rien modifier."
    ),
    "Run a dry run": "Lancer une simulation",
    "Objects that would be deleted": "Objets qui seraient supprimés",
    "Objects kept by a hold": "Objets gardés par une conservation",
    "Objects kept for a later contact": "Objets gardés pour un contact ultérieur",
    "Records by retention class": "Enregistrements par classe de conservation",
    "Class": "Classe",
    # errors
    "Error": "Erreur",
    "This page is for the data protection officer.": "Cette page est réservée au délégué à la protection des données.",
    "The form has expired. Go back, reload the page and try again.": (
        "Le formulaire a expiré. Revenez en arrière, rechargez la page et réessayez."
    ),
    "Not found.": "Introuvable.",
    "The request was refused: {why}": "La demande a été refusée : {why}",
    # The audit page's details (services/console/audit_view.py).
    "Blocked by cases": "Bloquée par les dossiers",
    "Deleted for everyone": "Supprimé pour tous",
    "Edited": "Modifié",
    "Event": "Événement",
    "Ground": "Motif",
    "Group": "Groupe",
    "Hold": "Conservation",
    "Holds": "Conservations",
    "In a group": "Dans un groupe",
    "Keys destroyed": "Clés détruites",
    "Keys destroyed at": "Clés détruites le",
    "Limit": "Limite",
    "Objects deleted": "Objets supprimés",
    "Objects locked": "Objets verrouillés",
    "Outcome": "Résultat",
    "Prefix": "Préfixe",
    "Previous state": "État précédent",
    "Pseudonyms": "Pseudonymes",
    "Records deleted": "Enregistrements supprimés",
    "Refusal ground": "Motif du refus",
    "Words searched": "Mots recherchés",
    "yes": "oui",
    "no": "non",
}
