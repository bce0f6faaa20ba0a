"""The words of the real-text simulator: subjects, slot vocabularies, phrasings.

Pure data, read by ``realtext_writer.py`` and ``realtext_accounts.py``.
Subjects are written one per line as ``subtopic: concept; concept; ...``
under a domain; a concept is a noun phrase that reads well after
"Explain ..." or "Give me examples of ...", and may hold ``{slot}`` fields
filled per request from ``SLOTS`` (or from numbers, see
``realtext_writer.fill``). Each domain has a kind that decides which intents
fit it (nobody asks for Rust code about tenancy law).

``subjects.py`` holds the domains and their subjects; ``questions.py`` the
slot vocabularies, audiences, intents and added clauses; ``templates.py``
the template pieces, batch jobs' tasks and documents, and famous prompts.
"""

from __future__ import annotations

from streamguard.sim.realtext_catalogue.questions import AUDIENCES, CLAUSES, INTENTS, INTENTS_BY_KIND, SLOTS
from streamguard.sim.realtext_catalogue.subjects import DOMAINS
from streamguard.sim.realtext_catalogue.templates import AGENT_FRAMEWORKS, AGENT_STEPS, DOC_FRAMES, DOC_TASKS, FAMOUS, TEMPLATE_PARTS

__all__ = [
    "AGENT_FRAMEWORKS",
    "AGENT_STEPS",
    "AUDIENCES",
    "CLAUSES",
    "DOMAINS",
    "DOC_FRAMES",
    "DOC_TASKS",
    "FAMOUS",
    "INTENTS",
    "INTENTS_BY_KIND",
    "SLOTS",
    "TEMPLATE_PARTS",
]
