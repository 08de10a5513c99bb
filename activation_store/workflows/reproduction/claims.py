"""The paper's text experiments, one entry each, in the report's order: the claim (Wu et al. 2024), what we
measure for it, and the step that measures it. Read this file to see what the report tests."""
from __future__ import annotations

from . import steps
from .factories import Margin, margin, similarity
from .records import Claim, Experiment

BOTH = "normed and raw"

EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(Claim(
        "multilingual-similarity", "Multilingual similarity (en–zh and other pairs)",
        "Parallel sentences (zh–en, GALE) are more similar than mismatched ones (mean-centred cosine of the "
        "last token, matched minus all mismatched pairs), most in the middle layers.",
        "paired − unpaired cosine of the last token, mean-centred, per layer; 95% bootstrap interval over items",
        dataset="django-ui"),
        steps.multilingual_similarity,
        notes=("Data: Django's human-translated UI strings (short), not GALE's sentences; no suffix appended.",)),
    Experiment(Claim(
        "multilingual-lens", "Multilingual logit lens: English translation vs the next Chinese token",
        "On Chinese text, the logit lens at intermediate layers gives the English translation of the next "
        "word a higher log-probability than the actual next Chinese token; the Chinese token wins at the end.",
        "log p(English translation of the next word) − log p(actual next token) per layer over the "
        "positions that have a one-token translation (CC-CEDICT first gloss); 95% bootstrap interval over positions",
        dataset="django-ui", lens=BOTH),
        steps.multilingual_lens,
        notes=("The paper requires the next word to be one token; we take every position whose next jieba "
               "word has a one-token English gloss.",)),
    Experiment(Claim(
        "language-trends", "Language trends through the layers (Chinese input)",
        "On non-English input, the lens's probability mass on English tokens rises in the early-middle "
        "layers (the dominant language is salient) and the input language takes over at the end.",
        "probability mass per language (p(language | token) from wordfreq), mean over all Chinese-input "
        "tokens per layer; 95% interval resampling whole sentences",
        dataset="django-ui", lens=BOTH),
        steps.language_trends),
    Experiment(Claim(
        "arithmetic-lens", "Arithmetic logit lens: digit vs number word",
        "At the last token of \"5=3+\", intermediate layers prefer the English number word (\" two\") to "
        "the digit (\"2\"); the digit wins at the output.",
        "log p(digit b) − log p(word b) at the last token of the result-first prompt \"{a+b}={a}+\"; 95% "
        "bootstrap interval over prompts (negative = the word wins)", dataset="arithmetic", lens=BOTH),
        margin(Margin(("code",), "result-first", -1, "digit − word", end_sign=+1)),
        notes=("The built-in set lists items by b (a+1, a+2, …): the first N items are the b = 1, 2, … sums; "
               "the multiplication items are not reached at the default limit.",), notes_always=True),
    Experiment(Claim(
        "arithmetic-similarity", "Arithmetic similarity: \"3+2\" vs \"three plus two\"",
        "An expression in digits and the same expression in words are more similar than mismatched "
        "expressions (last token), most in the middle layers.",
        "paired − unpaired cosine of the last token (digits vs words), mean-centred; 95% interval over items",
        dataset="arithmetic"),
        similarity("code", ("digits", "words"), "digits-words", "digits–words similarity"),
        notes=("The paper also splits mismatched pairs into same-result and different-result; we report "
               "the all-mismatched baseline only.",)),
    Experiment(Claim(
        "arithmetic-pca", "Arithmetic PCA trajectories",
        "Projected into the PCA plane of the 20 number anchors (digit and number-word unembeddings), the "
        "last-token states of \"5=3+\" move through the layers toward the answer's anchors; the paper reads "
        "the middle layers as nearer the English number words.",
        "share of prompts whose state is nearer the word anchor of the answer b than its digit anchor, per "
        "layer (in the anchor plane); 95% bootstrap interval over prompts", dataset="arithmetic"),
        steps.arithmetic_pca),
    Experiment(Claim(
        "code-and-lens", "Code logit lens: \" and\" at list commas",
        "At the comma between elements of a Python list literal, intermediate layers give \" and\" a higher "
        "probability than \" or\" / \" not\".",
        "log p(\" and\") − max(log p(\" or\"), log p(\" not\")) at list-literal commas (HumanEval); 95% "
        "interval over commas", dataset="code", lens=BOTH),
        margin(Margin(("main", "code"), "code", +1, "and − max(or, not)", include=(" and",), label="and"))),
    Experiment(Claim(
        "code-roles-lens", "Code semantic-role lens: parameter name vs argument",
        "At \"(\" or \",\" before a call's argument, intermediate layers predict the parameter's name "
        "(its semantic role) over the argument's own first token.",
        "log p(parameter name) − log p(argument's first token) at call arguments with a known signature; "
        "95% interval over arguments; the share where the name wins is the paper's sign plot",
        dataset="code", lens=BOTH),
        margin(Margin(("main", "code"), "code", +1, "parameter − argument", exclude=(" and",), label="roles"))),
    Experiment(Claim(
        "code-similarity", "Code ↔ description similarity",
        "A program and its natural-language description are more similar than mismatched pairs in the "
        "middle layers.",
        "paired − unpaired cosine of the last token (code without docstring vs the docstring), mean-centred; "
        "95% interval over programs", dataset="code"),
        similarity("code", ("code", "doc"), "code-doc", "code–doc similarity")),
    Experiment(Claim(
        "cogs-similarity", "COGS similarity: sentence vs logical form, against the name-swapped form",
        "A sentence is more similar to its own logical form than to the same form with its two names "
        "swapped (score = cos(original) − cos(swapped) > 0).",
        "cos(sentence, form) − cos(sentence, form with the two names swapped), last token, mean-centred; "
        "95% interval over items", dataset="semantics"),
        similarity("main", ("sentence", "form"), "original − swapped", "original − swapped", baseline="form-swapped"),
        notes=("COGS is not installable: sentences and forms come from the built-in seeded COGS-style grammar.",)),
    Experiment(Claim(
        "cogs-roles", "COGS semantic-role lens",
        "Reading the text before a name, the lens gives the name's role word (agent/theme/recipient) more "
        "probability than that role gets at other roles' positions: the centred confusion matrix has a "
        "positive diagonal.",
        "mean of the centred confusion matrix's diagonal per layer (no interval: a difference of group "
        "means) and, with a 95% interval over positions, log p(gold role) − max log p(other role)",
        dataset="semantics", lens=BOTH),
        steps.cogs_roles),
    Experiment(Claim(
        "interventions", "Interventions (steering)",
        "Steering in the shared representation space changes the output in other languages/data types: "
        "English Good−Bad steering moves Chinese/Spanish sentiment about as much as same-language steering; "
        "arithmetic and range(start, end) steering change the answer as predicted.",
        "from the sweeps with random-vector controls (`examples/steering_sweeps.py`, docs/interventions.md)"),
        steps.interventions),
)


def experiment(key: str) -> Experiment:
    """The entry of one experiment by its key (e.g. ``"cogs-similarity"``), to run one section alone."""
    for entry in EXPERIMENTS:
        if entry.claim.key == key:
            return entry
    raise KeyError(f"no experiment {key!r}; the report's: {', '.join(e.claim.key for e in EXPERIMENTS)}")
