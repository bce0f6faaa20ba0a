"""How people ask in the real-text simulator: slot vocabularies, audiences, intents, added clauses."""

from __future__ import annotations

__all__ = ["AUDIENCES", "CLAUSES", "INTENTS", "INTENTS_BY_KIND", "SLOTS"]

# Slot vocabularies; numbers ({small}, {num}, {big}, {year}, {k}) are drawn in realtext_writer.fill.
SLOTS: dict[str, tuple[str, ...]] = {
    "city": (
        "Lisbon", "Tokyo", "Kyoto", "Mexico City", "Cape Town", "Buenos Aires", "Istanbul", "Prague", "Hanoi",
        "Vancouver", "Marrakech", "Seoul", "Copenhagen", "Edinburgh", "Lima", "Bangkok", "Chicago", "Sydney",
        "Nairobi", "Berlin", "Porto", "Montreal", "Rome", "Dubai", "Singapore", "Reykjavik", "Vienna",
        "New Orleans", "Barcelona", "Bogota", "Krakow", "Taipei", "Melbourne", "Athens", "Budapest", "Oaxaca",
    ),
    "country": (
        "Japan", "Portugal", "Vietnam", "Peru", "Morocco", "Canada", "Germany", "Italy", "Kenya", "India",
        "Mexico", "Iceland", "Norway", "Chile", "New Zealand", "Thailand", "Greece", "Brazil", "Colombia",
        "South Korea", "Spain", "Ireland", "Australia", "the Netherlands", "Scotland", "Croatia", "Georgia",
        "Indonesia", "Tanzania", "Argentina",
    ),
    "person": (
        "Maya", "Omar", "Lena", "Kenji", "Priya", "Lucas", "Amara", "Diego", "Sofia", "Tomasz", "Aisha", "Noah",
        "Ingrid", "Mateo", "Chloe", "Ravi", "Yuki", "Fatima", "Elena", "Samuel", "Zara", "Kwame", "Ana", "Jonas",
        "Mei", "Hugo", "Nadia", "Felix", "Leila", "Arjun",
    ),
    "company": (
        "Brightleaf", "Norwind", "Quillstone", "Harborline", "Tessellate", "Pinecrest Labs", "Lumio", "Crestway",
        "Orbitek", "Fernhill", "Vantora", "Kelpie Systems", "Mossgrove", "Tidewater", "Ashfield Analytics",
        "Beacon Health", "Copperfox", "Driftwood Media", "Elmstone Bank", "Glasshouse", "Halcyon Travel",
        "Ironbark", "Juniper Legal", "Kestrel Foods",
    ),
    "product": (
        "meal-kit", "language-learning", "budgeting", "fitness tracking", "note-taking", "recipe", "travel booking",
        "tutoring", "legal-help", "pet care", "home repair", "study planner", "smart-thermostat", "bookkeeping",
    ),
    "job": (
        "data analyst", "nurse", "software engineer", "product manager", "teacher", "graphic designer",
        "accountant", "marketing", "civil engineer", "UX researcher", "paralegal", "pharmacist", "sales",
        "DevOps", "customer support", "electrician",
    ),
    "dish": (
        "pad thai", "paella", "chicken tikka masala", "pho", "ratatouille", "shakshuka", "bibimbap", "carbonara",
        "jollof rice", "moussaka", "ramen", "tacos al pastor", "beef bourguignon", "falafel", "risotto",
        "dumplings", "goulash", "feijoada", "laksa", "pierogi",
    ),
    "ingredient": (
        "chickpeas", "salmon", "spinach", "tofu", "sweet potatoes", "mushrooms", "ground beef", "lentils",
        "eggs", "broccoli", "chicken thighs", "quinoa", "courgettes", "black beans", "feta", "cauliflower",
        "prawns", "aubergine", "oats", "cabbage",
    ),
    "plang": ("Python", "JavaScript", "TypeScript", "Rust", "Go", "Java", "C++", "C#", "Kotlin", "Ruby", "Swift", "R"),
    "nl": (
        "French", "Spanish", "German", "Italian", "Japanese", "Portuguese", "Mandarin", "Korean", "Dutch",
        "Polish", "Turkish", "Swedish", "Hindi", "Arabic",
    ),
    "err": (
        "a TypeError", "a segmentation fault", "an off-by-one error", "a null pointer exception", "a timeout",
        "an index out of range error", "a KeyError", "a deadlock", "a memory leak", "a stack overflow",
        "wrong results for negative numbers", "a syntax error I can't find",
    ),
    "month": (
        "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
        "November", "December",
    ),
}

AUDIENCES: tuple[str, ...] = (
    "a complete beginner", "a ten-year-old", "a high-school student", "a first-year undergraduate",
    "a busy manager", "my grandmother", "a software engineer", "a nurse", "a graduate student",
    "someone who hated this topic at school", "a non-native English speaker", "a journalist",
    "a retired teacher", "a small-business owner",
)

# Intents: name -> phrasings. {c}: a concept, {c2}: a second concept of the same
# subject, {s}: the subtopic's name, {aud}: an audience, {lang}: a programming
# language, {k}: a small count; other {slots} from SLOTS. Terse phrasings are
# the keyword-style queries some people type; they live under "<intent>/terse".
INTENTS: dict[str, tuple[str, ...]] = {
    "explain": (
        "Explain {c}.",
        "Can you explain {c} in simple terms?",
        "How does {c} work?",
        "What is {c}, and why does it matter in {s}?",
        "I'm struggling to understand {c}. Could you walk me through it?",
        "Give me an intuitive explanation of {c} for {aud}.",
        "What's the main idea behind {c}?",
        "Explain {c} as if I were {aud}.",
        "Could you break down {c} step by step?",
        "I keep getting confused about {c}. What am I missing?",
        "What do people mean when they talk about {c}?",
        "Help me understand {c} properly, not just the definition.",
    ),
    "summarise": (
        "Summarise the key points of {c} in {k} bullet points.",
        "Give me a short overview of {c}.",
        "What are the main things to know about {c}?",
        "Write a one-paragraph summary of {c} for {aud}.",
        "Sum up {c} in a few sentences.",
        "What's the gist of {c}?",
        "Give me a cheat sheet on {c}.",
    ),
    "examples": (
        "Give me {k} examples of {c}.",
        "What are some real-world examples of {c}?",
        "Show {k} worked examples involving {c}.",
        "List {k} common situations where {c} comes up.",
        "Can you illustrate {c} with a concrete example?",
        "I learn best from examples. Show me {c} in practice.",
    ),
    "compare": (
        "What is the difference between {c} and {c2}?",
        "Compare {c} with {c2}.",
        "{c} or {c2}: which matters more, and when?",
        "How does {c} relate to {c2}?",
        "Make a table comparing {c} and {c2}.",
        "People mix up {c} and {c2}. How do I tell them apart?",
    ),
    "code": (
        "Write a {lang} program that demonstrates {c}.",
        "Show me {lang} code for {c}.",
        "How would I implement {c} in {lang}?",
        "Can you write a {lang} function for {c}, with comments?",
        "My {lang} code for {c} gives {err}. What am I doing wrong?",
        "Write unit tests in {lang} for code that handles {c}.",
        "Give me an idiomatic {lang} snippet showing {c}.",
        "Refactor a messy {lang} script about {c} into clean functions.",
    ),
    "translate": (
        'Translate into {nl}: "Could you tell me more about {c}?"',
        'How do you say "I am reading about {c} this week" in {nl}?',
        'Translate this to {nl} please: "{C} is an important part of {s}."',
        'What is the {nl} for "{c}"?',
        'Translate into {nl} for a presentation: "Today we will look at {c}."',
    ),
    "quiz": (
        "Write {k} multiple-choice questions about {c}, with answers.",
        "Quiz me on {c}.",
        "Make {k} flashcards on {c}.",
        "Test my understanding of {c} with {k} short questions.",
        "Create a practice exam question on {c} with a model answer.",
    ),
    "advice": (
        "Any tips for dealing with {c}?",
        "What are the most common mistakes people make with {c}?",
        "I need help with {c}. Where do I start?",
        "What's the best way to approach {c} as {aud}?",
        "What should I know about {c} before I get started?",
        "Is there a simple checklist for {c}?",
        "What would an expert tell me about {c} that beginners don't know?",
    ),
    "procon": (
        "What are the pros and cons of {c}?",
        "Is {c} overrated? Give arguments for and against.",
        "Give me a balanced view of {c}.",
        "What are the strongest criticisms of {c}?",
    ),
    "history": (
        "What is the history of {c}?",
        "Who first came up with {c}, and how has it changed since?",
        "How did {c} develop over time?",
        "Tell me the story behind {c}.",
    ),
    "solve": (
        "Work through a problem on {c} step by step, using the numbers {num} and {small}.",
        "Set me a problem about {c} and then solve it.",
        "Solve this: a question on {c} where the value is {num}. Show your working.",
        "Calculate the answer to a typical exam problem on {c}, with {big} as the input.",
        "Walk me through a numerical example of {c}.",
    ),
    "write": (
        "Write a {k}00-word essay about {c}.",
        "Write a short poem about {c}.",
        "Write a blog post introducing {c} to {aud}.",
        "Draft a short talk on {c} for {aud}.",
        "Write a story for kids that teaches {c}.",
        "Write a LinkedIn post about {c}.",
    ),
    "explain/terse": ("{c} explained", "{c} meaning", "{s} {c}", "what is {c}", "{c}??", "{c} simple explanation"),
    "summarise/terse": ("{c} summary", "{c} overview", "{c} key points"),
    "examples/terse": ("{c} examples", "{c} example please", "examples of {c}"),
    "compare/terse": ("{c} vs {c2}", "{c} or {c2}", "difference {c} {c2}"),
    "code/terse": ("{c} {lang} code", "{c} in {lang}", "{lang} {c} example"),
    "translate/terse": ('"{c}" in {nl}', "{c} {nl} translation"),
    "quiz/terse": ("{c} quiz", "{c} practice questions"),
    "advice/terse": ("{c} tips", "{c} help", "{c} mistakes to avoid"),
    "procon/terse": ("{c} pros cons", "is {c} worth it"),
    "history/terse": ("{c} history", "origin of {c}"),
    "solve/terse": ("{c} problem {num}", "{c} worked example", "solve {c} {num}"),
    "write/terse": ("essay on {c}", "poem {c}", "blog post {c}"),
}

# Which intents suit a domain of each kind, with weights.
INTENTS_BY_KIND: dict[str, dict[str, float]] = {
    "stem": {"explain": 5, "examples": 2, "compare": 1.5, "code": 1.5, "solve": 3, "quiz": 1, "summarise": 1, "history": 0.5, "translate": 0.2},
    "code": {"explain": 3, "code": 6, "compare": 1.5, "examples": 1.5, "advice": 1.5, "summarise": 0.5, "quiz": 0.3},
    "humanities": {"explain": 4, "summarise": 2, "compare": 1.5, "examples": 1.5, "history": 1.5, "procon": 1, "quiz": 1, "write": 1, "translate": 0.5},
    "professional": {"explain": 4, "advice": 4, "examples": 1.5, "compare": 1.5, "summarise": 1.5, "procon": 1, "write": 0.5, "translate": 0.3},
    "practical": {"advice": 5, "explain": 3, "examples": 2, "compare": 1, "summarise": 1, "procon": 0.5, "translate": 0.3},
    "creative": {"explain": 3, "write": 3, "examples": 2, "advice": 2, "compare": 1, "history": 1, "quiz": 0.5},
}

# Optional clauses people add around a question (each request takes 0-2).
CLAUSES: tuple[str, ...] = (
    "Keep it under {k}00 words.",
    "Use bullet points.",
    "Include an example.",
    "I'm preparing for an exam on {s}.",
    "This is for a presentation at work.",
    "Please be precise.",
    "Cite sources if you can.",
    "My teacher explained it badly.",
    "Thanks!",
    "I have {small} minutes before a meeting.",
    "Assume I know the basics.",
    "Avoid jargon.",
    "I'm {person}, by the way, and I'm new to this.",
    "Asking for a friend.",
    "Short answer please.",
    "Explain like I'm five.",
    "I read something different online yesterday.",
    "It's for my {k}th-grade class.",
    "No need to be polite, just the facts.",
    "Use an analogy.",
    "Answer in plain English.",
    "I'm writing a report for {company}.",
    "We argued about this at dinner.",
    "I need this for a project due on {month} {small}.",
    "Be honest.",
    "Go into detail.",
    "Number the steps.",
    "Add a summary at the end.",
    "I've already read the Wikipedia page.",
    "Keep it friendly.",
)
