"""COGS-style sentences with their logical forms, from a small seeded grammar.

COGS itself is not installable, so sentences are generated in its style (tokens
separated by spaces, final " .") with logical forms in its notation: definite
nouns first as ``* cake ( x _ 3 )``, then the verb's roles as
``give . agent ( x _ 1 , Emma )`` joined by ``AND``, where ``x _ i`` is the
0-based word index. Every sentence has exactly two names, so each item also
has ``form-swapped``: the form with the two names exchanged (the paper's
baseline for sentence <-> form similarity).

Annotations on ``sentence`` for the semantic-role lens: at the word before each
name (the model has read the text before the name), target the name's role word
(" agent", " theme", " recipient"), alternatives the other role words."""
from __future__ import annotations

import random

from .base import Annotation, Dataset

NAMES = ("Emma", "Liam", "Noah", "Mia", "Max", "Ben", "Sam", "Tom", "Anna", "Lucy", "Jack", "Kate")
NOUNS = ("cake", "book", "ball", "cookie", "letter", "box", "hat", "key")
TRANSITIVE = (("see", "saw", "seen"), ("like", "liked", "liked"), ("help", "helped", "helped"),
              ("find", "found", "found"), ("call", "called", "called"), ("admire", "admired", "admired"))
DATIVE = (("give", "gave", "given"), ("send", "sent", "sent"), ("offer", "offered", "offered"),
          ("lend", "lent", "lent"), ("show", "showed", "shown"))
ROLES = ("agent", "theme", "recipient")
N_ITEMS = 600
SEED = 0

# (template, verb kind); {A}/{B} are the names in order of appearance, each with its role
TEMPLATES = (
    ("{A} {past} {B} .", "transitive", ("agent", "theme")),
    ("{A} {past} {B} the {noun} .", "dative", ("agent", "recipient")),
    ("{A} {past} the {noun} to {B} .", "dative", ("agent", "recipient")),
    ("{A} was {participle} by {B} .", "transitive", ("theme", "agent")),
    ("The {noun} was {participle} to {A} by {B} .", "dative", ("recipient", "agent")),
)


def _form(words: list[str], lemma: str, verb_index: int, roles: list[tuple[str, str]]) -> str:
    """A COGS logical form: definite nouns, then the verb's role conjuncts in the given order."""
    definites = [f"* {words[i].lower()} ( x _ {i} )" for i in range(1, len(words))
                 if words[i - 1].lower() == "the" and words[i] in NOUNS]
    conjuncts = [f"{lemma} . {role} ( x _ {verb_index} , {argument} )" for role, argument in roles]
    body = " AND ".join(conjuncts)
    return " ; ".join(definites) + " ; " + body if definites else body


def _item(rng: random.Random, index: int):
    template, kind, name_roles = TEMPLATES[index % len(TEMPLATES)]
    lemma, past, participle = rng.choice(TRANSITIVE if kind == "transitive" else DATIVE)
    first, second = rng.sample(NAMES, 2)
    noun = rng.choice(NOUNS)
    sentence = template.format(A=first, B=second, past=past, participle=participle, noun=noun)
    words = sentence.split(" ")
    verb_index = next(i for i, w in enumerate(words) if w in (past, participle))
    roles_by_name = dict(zip((first, second), name_roles))
    ordered: list[tuple[str, str]] = []
    for i, word in enumerate(words):
        if word in roles_by_name:
            ordered.append((roles_by_name[word], word))
        elif word == noun and words[i - 1].lower() == "the":
            ordered.append(("theme", f"x _ {i}"))
    ordered.sort(key=lambda pair: ROLES.index(pair[0]))
    form = _form(words, lemma, verb_index, ordered)
    swapped = _form(words, lemma, verb_index, [(role, {first: second, second: first}.get(arg, arg)) for role, arg in ordered])
    annotations = []
    for name, role in roles_by_name.items():
        start = sentence.index(f" {name} ") if not sentence.startswith(name + " ") else 0
        if start == 0:
            continue  # a sentence-initial name has no text before it to read
        annotations.append(Annotation(start - 1, f" {role}", tuple(f" {r}" for r in ROLES if r != role)))
    texts = {"sentence": sentence, "form": form, "form-swapped": swapped}
    return f"s{index:04d}", texts, tuple(sorted(annotations, key=lambda a: a.char))


def semantics(n_items: int = N_ITEMS, seed: int = SEED) -> Dataset:
    """``n_items`` distinct generated sentences (deterministic for a seed), five constructions in turn."""
    rng = random.Random(seed)
    items, annotations, seen = [], {}, set()
    index = 0
    while len(items) < n_items:
        item_id, texts, marks = _item(rng, index)
        index += 1
        if texts["sentence"] in seen:
            continue
        seen.add(texts["sentence"])
        item_id = f"s{len(items):04d}"
        items.append((item_id, texts))
        annotations[(item_id, "sentence")] = marks
    return Dataset(name="semantics", version=f"cogs-style-1-seed{seed}", variants=("sentence", "form", "form-swapped"),
                   items=items, source="generated COGS-style grammar (actstore.extract.datasets.semantics)",
                   annotations=annotations)
