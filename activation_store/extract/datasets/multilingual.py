"""A multilingual parallel set built from Django's translation catalogs.

Django ships its interface strings ("Change my password", "Page not found", …)
translated by people into ~100 languages as compiled gettext catalogs; the
strings every chosen language translates form parallel items. Placeholders,
markup and one-word strings are left out."""
from __future__ import annotations

import gettext
import re
from pathlib import Path

from ...errors import ActstoreError
from .base import Dataset

# variant name -> Django locale directory; zh, ja, ko, ru, ar, hi are non-Latin scripts
LANGUAGES = {
    "en": None, "zh": "zh_Hans", "ja": "ja", "ko": "ko", "ru": "ru", "ar": "ar",
    "hi": "hi", "fr": "fr", "de": "de", "es": "es",
}
_SKIP = re.compile(r"[%{}<>\\]|https?:|\n")


def django_ui() -> Dataset:
    try:
        import django
    except ImportError:
        raise ActstoreError("the built-in multilingual dataset reads Django's catalogs: pip install django") from None
    root = Path(django.__file__).parent
    translations: dict[str, dict[str, str]] = {}
    for variant, locale in LANGUAGES.items():
        if locale is None:
            continue
        for catalog in sorted(root.rglob(f"locale/{locale}/LC_MESSAGES/django.mo")):
            with open(catalog, "rb") as handle:
                entries = gettext.GNUTranslations(handle)._catalog
            for source, target in entries.items():
                if isinstance(source, str) and target and _usable(source) and not _SKIP.search(target):
                    translations.setdefault(source, {}).setdefault(variant, target.strip())
    wanted = [v for v in LANGUAGES if v != "en"]
    items = [
        (source, {"en": source, **texts})
        for source, texts in sorted(translations.items())
        if all(v in texts for v in wanted)
    ]
    return Dataset(
        name="django-ui",
        version=f"django-{django.__version__}",
        variants=tuple(LANGUAGES),
        items=items,
        source=f"Django {django.__version__} translation catalogs (django/**/locale/*/LC_MESSAGES/django.mo)",
    )


def _usable(source: str) -> bool:
    return len(source.split()) >= 2 and not _SKIP.search(source) and "\x04" not in source
