"""Fixed wrappers and shared texts of the real-text simulator: template pieces, batch jobs' tasks and documents, famous prompts."""

from __future__ import annotations

__all__ = ["AGENT_FRAMEWORKS", "AGENT_STEPS", "DOC_FRAMES", "DOC_TASKS", "FAMOUS", "TEMPLATE_PARTS"]

# Templates: the pieces that distillers', products', power users' and batch
# jobs' fixed wrappers are assembled from. {q} is the question.
TEMPLATE_PARTS: dict[str, tuple[str, ...]] = {
    "distill_role": (
        "You are an expert in every academic field.",
        "You are a world-class professor and domain expert.",
        "You are a helpful, knowledgeable and rigorous assistant.",
        "Act as a senior expert with decades of experience.",
        "You are an AI tutor who gives complete, correct answers.",
        "You are the most capable assistant in the world.",
        "You are a meticulous analyst.",
        "You are an expert teacher preparing a model answer.",
    ),
    "distill_reasoning": (
        "Answer step by step with reasoning.",
        "Think step by step and show all of your reasoning before the final answer.",
        "Explain your chain of thought in detail, then state the answer.",
        "Reason carefully through every step; do not skip any intermediate step.",
        "First write your reasoning inside <think></think> tags, then give the answer.",
        "Let's think step by step.",
        "Show your full working and justify each claim.",
    ),
    "distill_format": (
        "Format the answer in Markdown with headings.",
        'Return JSON with the keys "reasoning" and "answer".',
        "End with a line of the form 'Final answer: ...'.",
        "Be thorough and complete; length is not a concern.",
        "Give the most detailed answer you can.",
        "Include examples and edge cases.",
    ),
    "distill_layout": (
        "{role} {reasoning}\n\nQuestion: {q}\n\n{format}",
        "### Instruction:\n{role} {reasoning} {format}\n\n### Input:\n{q}\n\n### Response:",
        "{q}\n\n---\n{reasoning} {format}",
        "[SYSTEM] {role}\n[USER] {q}\n[INSTRUCTIONS] {reasoning} {format}",
        "<task>\n{q}\n</task>\n{role} {reasoning} {format}",
        "{role} {reasoning}: {q}",
        "Q: {q}\n{reasoning} {format}\nA:",
    ),
    "personal_prefix": (
        "Context: I'm a {job} and I need this for work.",
        "As a {job} with {small} years of experience,",
        "I'm a student.",
        "Background: {job}, not an expert in this area.",
        "Quick question from a {job}:",
        "Hi! Same format as always please.",
    ),
    "personal_suffix": (
        "Keep the answer under {k}00 words and use bullet points.",
        "Be concise. No fluff.",
        "Give me the answer first, then the explanation.",
        "Use British spelling and a friendly tone.",
        "End with {small} follow-up questions I could ask.",
        "Include a TL;DR at the top.",
        "Format as a numbered list.",
    ),
    "system_prompt": (
        "You are {bot}, the friendly assistant inside {company}'s {product} app. Answer the user's question "
        "helpfully and concisely. Do not mention other companies' products. If a question is unsafe or outside "
        "the app's scope, politely decline.\n\nUser: {q}\nAssistant:",
        "System: You are a customer-facing AI assistant for {company}. Keep answers short, warm and accurate. "
        "Use simple language suitable for a general audience and never give legal or medical guarantees.\n"
        "Customer message: {q}",
        "<system>You are {bot}, an assistant built by {company} for their {product} platform. Always answer in "
        "a helpful tone, format with short paragraphs, and add one follow-up suggestion.</system>\n<user>{q}</user>",
        "[{company} {product} assistant | tone: upbeat | max length: 200 words | locale: en]\n"
        "Answer the end user's message below.\n\nMessage: {q}",
    ),
    "bot": ("Sunny", "Max", "Ava", "Pip", "Atlas", "Nova", "Milo", "Iris", "Echo", "Juno"),
}

# Batch jobs: one instruction over many documents of one kind.
DOC_TASKS: tuple[str, ...] = (
    "Summarise the following {doctype} in {k} bullet points. Return only the bullets.\n\n{doc}",
    "Extract all people, organisations and places mentioned in this {doctype} and return them as JSON "
    'with the keys "people", "organisations" and "places".\n\nText:\n{doc}',
    "Classify the sentiment of the following {doctype} as positive, negative or neutral, and give a "
    "one-sentence reason.\n\n{doc}",
    "Translate the following {doctype} into {nl}, keeping the original formatting.\n\n{doc}",
    "Rewrite this {doctype} in plain language at a reading age of 12.\n\n---\n{doc}\n---",
    "Read the {doctype} below and list every action item with an owner and a deadline.\n\n{doc}",
    "Tag the {doctype} below with up to {small} topic labels from our taxonomy. Output: comma-separated labels.\n\n{doc}",
)

# doctype -> sentence frames; {c} is a concept of the job's subjects.
DOC_FRAMES: dict[str, tuple[str, ...]] = {
    "customer review": (
        "I bought this after reading about {c} and it arrived in {small} days.",
        "Honestly the part about {c} was better than I expected.",
        "My partner {person} thought the instructions on {c} were confusing.",
        "Would I recommend it? For anyone into {c}, probably yes.",
        "Customer service at {company} took {num} minutes to answer my question about {c}.",
        "Two stars off because {c} was barely covered.",
        "We used it every day in {month} and it held up well.",
    ),
    "support ticket": (
        "Ticket #{big}: the customer reports a problem related to {c}.",
        "They tried the steps in our help article on {c} without success.",
        "Account owner {person} from {company} says this started on {month} {small}.",
        "Priority was raised to P{small} after {num} failed attempts.",
        "The customer asks whether {c} is covered by their plan.",
        "Attached logs mention {c} near the time of the failure.",
    ),
    "news article": (
        "{CITY} - Officials announced new measures on {c} on Tuesday.",
        "Experts interviewed by our reporter said {c} had been overlooked for years.",
        "According to {company}, about {num} percent of residents are affected by {c}.",
        "{person}, a local resident, said the debate over {c} dominated the meeting.",
        "The report, published in {month}, also discussed {c2}.",
        "Critics argue the plan does little to address {c}.",
    ),
    "contract clause": (
        "Section {small}.{num}: The parties agree that matters relating to {c} shall be governed by this Agreement.",
        "{company} shall not be liable for losses arising from {c} except as stated in clause {small}.",
        "Either party may terminate on {num} days' written notice if {c} is not resolved.",
        "Nothing in this clause limits obligations concerning {c2}.",
        "Notices regarding {c} must be delivered to the address of {company}.",
    ),
    "clinical note": (
        "Patient, {num}-year-old, presents with concerns about {c}.",
        "History notable for {c2}; no known drug allergies.",
        "Discussed {c} with the patient and provided written guidance.",
        "Plan: review in {small} weeks; refer if {c} worsens.",
        "Vitals within normal limits; patient asked about {c2}.",
    ),
    "research abstract": (
        "We study {c} using a dataset of {big} observations.",
        "Prior work on {c2} has left open how {c} behaves at scale.",
        "Our method improves on the baseline by {num} percent.",
        "We find that {c} depends strongly on {c2}.",
        "These results have implications for {c} in practice.",
    ),
    "internal email": (
        "Hi team, following up on yesterday's discussion of {c}.",
        "{person} will own the work on {c2} until {month} {small}.",
        "Could everyone review the draft on {c} before Friday?",
        "Budget for this is capped at {big} dollars.",
        "Let's sync again next week about {c}.",
    ),
}

# Prompts that many unrelated people send word for word (subject given by its
# domain and subtopic names).
FAMOUS: tuple[tuple[str, str, str], ...] = (
    ("literature and writing", "poetry", "Write a poem about the ocean."),
    ("philosophy", "existentialism", "What is the meaning of life?"),
    ("computer science", "machine learning", "Explain quantum computing in simple terms."),
    ("javascript programming", "web front end", "How do I center a div in CSS?"),
    ("literature and writing", "professional writing", "Write a cover letter for a software engineering job."),
    ("python programming", "python basics", "How do I reverse a list in Python?"),
    ("health and fitness", "weight management", "How can I lose weight fast?"),
    ("cooking", "baking", "Give me a simple recipe for chocolate chip cookies."),
    ("computer science", "machine learning", "What is machine learning?"),
    ("earth and space", "weather", "Why is the sky blue?"),
    ("careers and education", "interviews", "What are the most common job interview questions?"),
    ("literature and writing", "creative writing", "Tell me a story about a dragon."),
    ("finance", "personal finance", "How do I make a budget?"),
    ("history", "modern history", "What caused World War I?"),
    ("health and fitness", "sleep", "How can I fall asleep faster?"),
    ("languages", "spanish", "How do you say hello in Spanish?"),
)


# Agent frameworks: the preamble every call of a framework starts with, and the steps of a task.
# {c} and {c2} are the task's concepts, {s} its subject.
AGENT_FRAMEWORKS: tuple[str, ...] = (
    "You are an autonomous agent. You can use these tools: web_search(query), python(code), read_file(path), "
    "write_file(path, text). At each step, think about what to do next, then reply with exactly one JSON object "
    '{"thought": ..., "action": ..., "input": ...}. When the task is complete, use the action "finish".',
    "SYSTEM: You are a task-solving assistant running inside an agent loop. Available tools: search, browse, "
    "calculator, code_interpreter. Follow the ReAct format: Thought, Action, Action Input, Observation. Never "
    "invent observations; wait for the tool result. Stop when you can give the final answer.",
    "# Agent instructions\nYou plan and execute multi-step tasks for the user. Break the task into steps, call "
    "one tool per step (shell, http_get, python, notes), record what you learned, and keep going until the task "
    "is done. Output format: PLAN / ACTION / RESULT.",
)
AGENT_STEPS: tuple[str, ...] = (
    "search the web for an overview of {c}.",
    "read the first result and note what it says about {c}.",
    "run a small python experiment on {c} and check the output.",
    "compare {c} with {c2} and write down the differences.",
    "summarise what we know so far about {c} in three bullet points.",
    "look for a counterexample involving {c2}.",
    "write the notes file with our findings on {s}.",
    "check the result against a second source on {c2}.",
    "fix the error from the last step and try again.",
    "draft the final answer about {c} for the user.",
)
