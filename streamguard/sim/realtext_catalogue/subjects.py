"""The real-text simulator's subjects: domains, their kind, and their subtopics' concepts."""

from __future__ import annotations

__all__ = ["DOMAINS"]

# domain -> (kind, lines of "subtopic: concept; concept; ...")
DOMAINS: dict[str, tuple[str, str]] = {
    "mathematics": ("stem", """
algebra: solving quadratic equations; factoring polynomials of degree {small}; systems of {small} linear equations; completing the square; the binomial theorem; logarithm rules
calculus: the chain rule; integration by parts; the derivative of x^{small} times sin(x); limits at infinity; Taylor series of e^x around {small}; the fundamental theorem of calculus
linear algebra: eigenvalues and eigenvectors; the determinant of a {small}x{small} matrix; Gaussian elimination; orthogonal projections; singular value decomposition; change of basis
probability: Bayes' theorem; the probability of rolling {small} sixes with {num} dice; conditional independence; expected value of a random variable; the birthday paradox; Markov chains
statistics: hypothesis testing with p-values; confidence intervals for a mean; linear regression; the central limit theorem; standard deviation versus variance; choosing a sample size of {big}
number theory: prime factorisation of {big}; modular arithmetic; the greatest common divisor of {big} and {num}; Fermat's little theorem; the Chinese remainder theorem; Diophantine equations
geometry: the Pythagorean theorem; the area of a circle of radius {small}; similar triangles; the volume of a cone; angles in a regular polygon with {small} sides; coordinate geometry of lines
discrete mathematics: proof by induction; graph colouring; combinations and permutations of {num} items; the pigeonhole principle; recurrence relations; Boolean algebra
differential equations: separable differential equations; the harmonic oscillator equation; Laplace transforms; first-order linear ODEs; stability of equilibrium points; the heat equation
"""),
    "physics": ("stem", """
classical mechanics: Newton's second law; projectile motion at {num} degrees; conservation of momentum in collisions; torque and angular momentum; friction on an inclined plane; simple pendulums
electromagnetism: Maxwell's equations; Ohm's law in a circuit with {small} resistors; electromagnetic induction; the magnetic field of a solenoid; capacitors in series and parallel; Coulomb's law
thermodynamics: the second law of thermodynamics; entropy; the Carnot cycle; heat capacity of water; the ideal gas law at {num} degrees Celsius; latent heat of melting ice
quantum mechanics: the Schrodinger equation; wave-particle duality; the uncertainty principle; quantum tunnelling; the particle in a box; spin and the Pauli exclusion principle
relativity: time dilation at {num} percent of the speed of light; length contraction; mass-energy equivalence; the twin paradox; general relativity and gravity; gravitational lensing
optics: refraction and Snell's law; total internal reflection; diffraction gratings; thin lens equation; polarisation of light; how lasers work
nuclear and particle physics: radioactive half-life; nuclear fission; the standard model of particle physics; how the Higgs boson was discovered; beta decay; neutrinos
"""),
    "chemistry": ("stem", """
general chemistry: balancing chemical equations; the mole concept; limiting reagents; molarity of a {small} molar solution; electron configurations; periodic trends
organic chemistry: SN1 versus SN2 reactions; aromatic compounds and benzene; functional groups; stereochemistry and chirality; Grignard reagents; esterification
physical chemistry: reaction rates and rate laws; chemical equilibrium and Le Chatelier's principle; Gibbs free energy; activation energy; electrochemical cells; the Arrhenius equation
acids and bases: the pH of a {small} molar HCl solution; buffer solutions; titration curves; strong versus weak acids; the Henderson-Hasselbalch equation; Lewis acids
biochemistry: enzyme kinetics and Michaelis-Menten; protein folding; ATP and cellular energy; the Krebs cycle; DNA replication chemistry; lipid bilayers
materials chemistry: polymers and plastics; why graphene is strong; semiconductors and doping; corrosion of iron; ceramics; lithium-ion battery chemistry
"""),
    "biology": ("stem", """
genetics: Mendelian inheritance; dominant and recessive alleles; CRISPR gene editing; genetic linkage; mutations and their effects; Punnett squares for {small} genes
cell biology: mitosis versus meiosis; the structure of mitochondria; cell membranes and transport; protein synthesis; the cell cycle; apoptosis
evolution: natural selection; speciation; genetic drift; convergent evolution; the evidence for common descent; evolution of antibiotic resistance
ecology: food webs; the nitrogen cycle; keystone species; population growth models; biodiversity loss; predator-prey dynamics
microbiology: how bacteria divide; viruses versus bacteria; the human microbiome; fermentation by yeast; biofilms; how vaccines train immunity
neuroscience: how neurons fire; synaptic plasticity; the role of dopamine; memory formation in the hippocampus; neurotransmitters; sleep and the brain
human anatomy: the structure of the heart; how the kidneys filter blood; the bones of the hand; the lymphatic system; how muscles contract; the digestive system
"""),
    "computer science": ("stem", """
algorithms: binary search; Dijkstra's shortest path algorithm; dynamic programming; quicksort versus mergesort; greedy algorithms; breadth-first search
data structures: hash tables; balanced binary search trees; heaps and priority queues; linked lists versus arrays; tries; union-find
complexity theory: big-O notation; P versus NP; NP-complete problems; amortised analysis; reductions between problems; space complexity
operating systems: processes versus threads; virtual memory and paging; deadlocks; CPU scheduling; file systems; system calls
computer networks: the TCP three-way handshake; how DNS resolution works; HTTP versus HTTPS; subnetting a /24 network into {small} subnets; the OSI model; load balancers
databases: database normalisation; ACID transactions; B-tree indexes; isolation levels; query planning; sharding a database
distributed systems: the CAP theorem; consensus with Raft; eventual consistency; leader election; vector clocks; idempotent message handling
machine learning: gradient descent; overfitting and regularisation; decision trees and random forests; transformers and attention; cross-validation; the bias-variance trade-off
security: public-key cryptography; SQL injection; cross-site scripting; password hashing with salts; TLS certificates; buffer overflows
"""),
    "python programming": ("code", """
python basics: list comprehensions; dictionaries and sets; string formatting with f-strings; exceptions and try/except; reading a file line by line; default mutable arguments
python functions and classes: decorators; generators and yield; dataclasses; context managers; inheritance and super(); type hints
python data analysis: filtering a pandas DataFrame; groupby and aggregation in pandas; merging two DataFrames; numpy broadcasting; plotting with matplotlib; reading a CSV with {num} columns
python concurrency: asyncio and await; threading versus multiprocessing; the global interpreter lock; a thread pool executor; async HTTP requests; queues between threads
python web and apis: a Flask REST endpoint; FastAPI request validation; calling a JSON API with requests; Django models and migrations; web scraping with BeautifulSoup; authentication with JWT
python tooling: virtual environments; packaging with pyproject.toml; writing pytest tests; logging configuration; profiling slow code; formatting with black and ruff
"""),
    "javascript programming": ("code", """
javascript basics: closures; let versus const versus var; array map, filter and reduce; destructuring; the this keyword; template literals
asynchronous javascript: promises; async/await; the event loop; fetch with error handling; Promise.all; debouncing a function
react: React hooks like useState and useEffect; props versus state; rendering lists with keys; React context; memoisation with useMemo; form handling in React
node.js: an Express server; reading environment variables in Node; streams in Node.js; npm scripts; middleware; handling file uploads
typescript: TypeScript generics; interfaces versus type aliases; union and intersection types; strict null checks; type narrowing; declaration files
web front end: centering a div with flexbox; CSS grid layouts; responsive design with media queries; the DOM and event listeners; web accessibility; local storage
"""),
    "systems programming": ("code", """
rust: ownership and borrowing in Rust; Rust lifetimes; traits and generics in Rust; error handling with Result; async Rust with tokio; Rust iterators
c and c plus plus: pointers in C; memory leaks and valgrind; C++ smart pointers; move semantics in C++; templates in C++; undefined behaviour in C
go: goroutines and channels; Go interfaces; error handling in Go; Go modules; a Go HTTP server; context cancellation in Go
java: Java streams; the Java collections framework; Spring Boot controllers; Java garbage collection; exceptions in Java; multithreading in Java
sql: SQL joins; GROUP BY with HAVING; window functions in SQL; writing a query for the top {small} customers by revenue; indexes in PostgreSQL; common table expressions
shell and devops: bash loops over files; Docker images and containers; Kubernetes deployments; git rebase versus merge; a CI pipeline; cron jobs
"""),
    "law": ("professional", """
contract law: breach of contract; consideration in contracts; non-compete clauses; verbal agreements; terminating a contract early; force majeure clauses
criminal law: the difference between murder and manslaughter; self-defence; the right to remain silent; plea bargains; burden of proof; bail hearings
property law: adverse possession; easements; leasehold versus freehold; boundary disputes with a neighbour; title insurance; zoning laws
employment law: wrongful dismissal; overtime pay rules; discrimination at work; employment contracts in {country}; notice periods; whistleblower protection
intellectual property: copyright and fair use; trademarks; software patents; open-source licences like GPL and MIT; trade secrets; licensing a photograph
tenancy law: a security deposit dispute; eviction notices; landlord repair obligations; subletting an apartment; rent increases in {city}; breaking a lease early
family law: divorce proceedings; child custody; prenuptial agreements; adoption; child support; writing a will
"""),
    "medicine": ("professional", """
cardiology: high blood pressure; how statins work; atrial fibrillation; symptoms of a heart attack; cholesterol numbers; heart failure
infectious disease: antibiotic resistance; how influenza spreads; Lyme disease; tuberculosis treatment; hand hygiene; sepsis
pharmacology: drug half-life; interactions between ibuprofen and other drugs; the dose of paracetamol for a {num} kg adult; side effects of SSRIs; how antihistamines work; generic versus brand-name drugs
paediatrics: fever in a {small} year old; childhood vaccination schedules; croup; ear infections in children; normal growth charts; teething
mental health: cognitive behavioural therapy; panic attacks; burnout; symptoms of depression; ADHD in adults; grief
nutrition: daily protein requirements; vitamin D deficiency; the Mediterranean diet; intermittent fasting; iron-rich foods; fibre and gut health
dermatology: eczema; acne treatments; sunscreen SPF ratings; psoriasis; moles that should be checked; rosacea
first aid: treating a minor burn; CPR steps; what to do for a sprained ankle; nosebleeds; allergic reactions and EpiPens; recognising a stroke
"""),
    "finance": ("professional", """
personal finance: building an emergency fund; a monthly budget on {big} dollars; paying off credit card debt; the 50/30/20 rule; improving a credit score; saving for a house deposit
investing: index funds versus individual stocks; dollar-cost averaging; bonds and interest rates; diversification; price-to-earnings ratios; dividend reinvestment
retirement: compound interest on {big} dollars at {small} percent; pension contributions; a Roth IRA; the 4 percent withdrawal rule; annuities; retiring early
corporate finance: discounted cash flow valuation; the weighted average cost of capital; working capital; leveraged buyouts; share buybacks; net present value of a project
accounting: double-entry bookkeeping; accrual versus cash accounting; depreciation schedules; reading a balance sheet; cash flow statements; accounts receivable
taxes: capital gains tax; tax deductions for freelancers; VAT registration; filing taxes in {country}; tax on rental income; marginal tax brackets
banking and loans: mortgage amortisation on a {big}00 loan; fixed versus variable rate mortgages; how credit cards charge interest; personal loans; overdrafts; refinancing
cryptocurrency: how Bitcoin mining works; stablecoins; crypto wallets and private keys; proof of stake; smart contracts; the risks of crypto exchanges
"""),
    "economics": ("humanities", """
microeconomics: supply and demand; price elasticity; opportunity cost; monopolies and market power; marginal utility; externalities
macroeconomics: inflation; how central banks set interest rates; GDP and how it is measured; unemployment; fiscal stimulus; recessions
international trade: comparative advantage; tariffs; trade deficits; exchange rates; free trade agreements; globalisation
behavioural economics: loss aversion; anchoring bias; nudges; the endowment effect; hyperbolic discounting; the sunk cost fallacy
development economics: microfinance; the poverty trap; foreign aid effectiveness; institutions and growth; the resource curse; conditional cash transfers
"""),
    "history": ("humanities", """
ancient history: the fall of the Roman Empire; the Egyptian pyramids; Athenian democracy; the Persian Empire; the Han dynasty; Alexander the Great
medieval history: the feudal system; the Black Death; the Crusades; the Magna Carta; the Viking age; the Mongol Empire
early modern history: the Renaissance; the Protestant Reformation; the Age of Exploration; the Scientific Revolution; the Thirty Years' War; the Ottoman Empire at its height
modern history: the French Revolution; the Industrial Revolution; the causes of World War I; World War II in the Pacific; the Cold War; decolonisation in Africa
history of science: how the printing press spread; Galileo and the Church; the discovery of penicillin; the Manhattan Project; the space race; the history of the internet
american history: the American Revolution; the Civil War; the New Deal; the civil rights movement; the Louisiana Purchase; the Great Depression
"""),
    "philosophy": ("humanities", """
ethics: utilitarianism; Kant's categorical imperative; virtue ethics; the trolley problem; moral relativism; the ethics of eating meat
epistemology: what knowledge is; the Gettier problem; scepticism about the external world; empiricism versus rationalism; induction and Hume; justified belief
philosophy of mind: the mind-body problem; consciousness and qualia; the Chinese room argument; free will and determinism; personal identity; functionalism
political philosophy: the social contract; Rawls' veil of ignorance; libertarianism; Marx's theory of alienation; democracy and its critics; natural rights
logic: valid versus sound arguments; common logical fallacies; modus ponens; predicate logic; Godel's incompleteness theorems; paradoxes like the liar paradox
existentialism: Sartre's idea of bad faith; Camus and the absurd; Nietzsche's eternal recurrence; Kierkegaard's leap of faith; authenticity; anxiety and freedom
"""),
    "literature and writing": ("creative", """
literary analysis: the themes of Hamlet; symbolism in The Great Gatsby; the narrator of Wuthering Heights; Orwell's 1984 and surveillance; magical realism; unreliable narrators
creative writing: writing a short story about {person} in {city}; building believable characters; writing dialogue; a plot twist; writing a villain; show, don't tell
poetry: a sonnet about the sea; haiku about autumn; free verse; metaphor and simile; iambic pentameter; a poem for {person}'s birthday
grammar and style: the Oxford comma; who versus whom; passive voice; semicolons; dangling modifiers; subject-verb agreement
essay writing: a thesis statement; structuring an argumentative essay; writing a conclusion; citing sources in APA style; a college application essay; paraphrasing without plagiarism
professional writing: a cover letter for a {job} job; a polite follow-up email; a resignation letter; meeting minutes; a project proposal; a LinkedIn summary
"""),
    "cooking": ("practical", """
baking: sourdough starter; why my cake sank in the middle; gluten-free bread; laminated dough for croissants; baking soda versus baking powder; a chocolate chip cookie recipe
everyday cooking: a weeknight dinner with {ingredient} and {ingredient}; cooking rice perfectly; seasoning cast iron pans; how to make a roux; knife skills; cooking for {small} people on a budget
world cuisines: an authentic {dish} recipe; Japanese ramen broth; Indian curry spices; Mexican mole; Thai green curry; Ethiopian injera
vegetarian and vegan cooking: plant-based protein sources; a vegan substitute for eggs; tofu marinades; vegetarian lasagne; vegan baking; lentil recipes
food safety: how long leftovers keep in the fridge; thawing meat safely; cross-contamination; safe internal temperature for chicken; canning and preserving; storing {ingredient}
meal planning: a week of meal prep for {big} calories a day; batch cooking; a high-protein breakfast; lunches for kids; a shopping list for a week; freezer-friendly meals
"""),
    "travel": ("practical", """
itineraries: a {small}-day itinerary for {city}; a road trip through {country}; a weekend in {city} with kids; a honeymoon in {country}; a backpacking route across {country}; a one-day layover in {city}
travel logistics: visa requirements for {country}; travel insurance; the cheapest way to get from {city} to {city}; packing for a {small}-week trip; jet lag; carry-on luggage rules
budget travel: cheap flights to {city}; hostels versus hotels; travelling {country} on {num} dollars a day; travel credit cards; free things to do in {city}; working holidays
local culture: tipping customs in {country}; basic phrases for a trip to {country}; what to eat in {city}; local etiquette in {country}; festivals in {country}; dress codes at religious sites
outdoor travel: hiking in {country}; camping gear for beginners; national parks near {city}; altitude sickness; a ski trip to {country}; safety when hiking alone
"""),
    "health and fitness": ("practical", """
strength training: a beginner gym routine for {small} days a week; progressive overload; proper deadlift form; building muscle after {num}; rest days; bodyweight exercises
running: a couch-to-5k plan; training for a marathon in {small} months; running shoes; shin splints; interval training; pacing a half marathon
sleep: improving sleep quality; how much sleep adults need; insomnia tips; naps; caffeine and sleep; blue light before bed
weight management: a calorie deficit; losing weight without counting calories; metabolism myths; tracking macros; weight loss plateaus; healthy snacks
flexibility and recovery: stretching routines; yoga for beginners; foam rolling; lower back pain from sitting; mobility work; recovering from a pulled hamstring
"""),
    "business": ("professional", """
marketing: a marketing plan for a {product} startup; SEO basics; email marketing campaigns; social media strategy; customer personas; A/B testing landing pages
management: giving constructive feedback; running effective one-on-ones; managing a remote team; delegating tasks; handling conflict between employees; setting OKRs
startups: writing a business plan; pitching to investors; product-market fit; a seed round; choosing a co-founder; pricing a SaaS product
sales: cold emails to prospects; handling objections; a sales funnel; negotiation tactics; closing a deal; account management
project management: agile versus waterfall; writing a project charter; Gantt charts; scrum ceremonies; managing scope creep; risk registers
human resources: writing a job description for a {job}; onboarding new hires; performance reviews; employee retention; interview scorecards; parental leave policies
"""),
    "languages": ("humanities", """
spanish: ser versus estar; the subjunctive mood in Spanish; Spanish past tenses; Spanish pronunciation; common Spanish idioms; por versus para
french: French gender of nouns; the passe compose; French liaison; formal versus informal you in French; French numbers above {num}; French subjunctive
german: German cases; German word order; separable verbs in German; der, die, das; German compound nouns; modal verbs in German
japanese: hiragana and katakana; Japanese particles wa and ga; keigo politeness levels; learning kanji; Japanese counters; the te-form
english as a second language: phrasal verbs; the present perfect; English articles a and the; irregular verbs; English pronunciation of th; business English phrases
mandarin chinese: the four tones of Mandarin; measure words in Chinese; Chinese characters and radicals; pinyin; the particle le; Chinese grammar for beginners
"""),
    "home and diy": ("practical", """
plumbing: a leaking tap; unclogging a drain; a running toilet; replacing a shower head; low water pressure; a frozen pipe
electrical: replacing a light switch; why a circuit breaker keeps tripping; installing a ceiling fan; extension cord safety; smart home wiring; choosing LED bulbs
gardening: growing tomatoes; composting; pruning roses; a vegetable garden in a small space; houseplants that need little light; lawn care in spring
woodworking: building a bookshelf; choosing wood for outdoor furniture; sanding and finishing; dovetail joints; power tools for beginners; fixing a wobbly table
car maintenance: changing a flat tyre; checking engine oil; a car battery that keeps dying; when to replace brake pads; a check engine light; winter tyres
cleaning and organising: removing mould from a bathroom; decluttering a wardrobe; cleaning an oven naturally; getting red wine out of carpet; organising a small kitchen; a weekly cleaning schedule
"""),
    "arts and music": ("creative", """
music theory: the circle of fifths; chord progressions; major versus minor keys; time signatures; modes like Dorian and Mixolydian; voice leading
learning an instrument: learning guitar chords; practising piano scales; finger-picking patterns; reading sheet music; tuning a violin; playing drums in time
visual arts: perspective drawing; colour theory; watercolour techniques; drawing faces; composition in painting; oil versus acrylic paint
photography: aperture, shutter speed and ISO; portrait lighting; the rule of thirds; night photography; editing photos in Lightroom; choosing a first camera
film and tv: the French New Wave; how to write a screenplay; the hero's journey in films; cinematography techniques; the history of animation; film noir
design: typography basics; designing a logo; UX design principles; colour palettes for websites; wireframing an app; design systems
"""),
    "psychology": ("humanities", """
cognitive psychology: working memory; cognitive biases; attention and multitasking; how habits form; decision fatigue; the spacing effect
social psychology: conformity and the Asch experiment; the bystander effect; cognitive dissonance; groupthink; persuasion techniques; stereotypes and prejudice
developmental psychology: attachment theory; Piaget's stages of development; language acquisition in children; adolescence and identity; ageing and memory; temperament
personality psychology: the Big Five personality traits; introversion versus extroversion; the Myers-Briggs test; narcissism; resilience; emotional intelligence
"""),
    "earth and space": ("stem", """
astronomy: black holes; how stars form; exoplanets; the life cycle of the Sun; dark matter; the phases of the Moon
geology: plate tectonics; how volcanoes erupt; earthquakes and the Richter scale; the rock cycle; how fossils form; glaciers
climate science: the greenhouse effect; climate feedback loops; ocean acidification; carbon capture; El Nino; sea-level rise
weather: how hurricanes form; why the sky is blue; weather fronts; lightning; humidity and dew point; reading a weather map
space exploration: the Apollo missions; how rockets reach orbit; the International Space Station; Mars rovers; the James Webb Space Telescope; space debris
"""),
    "careers and education": ("practical", """
job applications: a resume for a {job}; answering 'tell me about yourself'; salary negotiation; a career change into {job} work; references; gaps in a CV
interviews: behavioural interview questions; the STAR method; a technical interview for a {job} role; questions to ask the interviewer; following up after an interview; a case interview
studying: the Pomodoro technique; active recall; preparing for an exam in {small} weeks; taking good notes; procrastination; studying with ADHD
higher education: choosing a university; writing a personal statement; applying for a PhD; scholarships; student loans; studying abroad in {country}
"""),
    "games and sports": ("creative", """
chess: the Sicilian defence; chess endgames; how to improve at chess; the queen's gambit; tactics like forks and pins; chess openings for beginners
football: the offside rule; formations like 4-3-3; the history of the World Cup; pressing tactics; the best football clubs in {country}; penalty shoot-outs
video games: game design principles; speedrunning; the history of Nintendo; balancing a multiplayer game; level design; building a PC for gaming
board and card games: poker odds; strategies for Catan; the rules of bridge; Dungeons and Dragons for beginners; cooperative board games; Go strategy
other sports: tennis serve technique; basketball defence; cycling training; swimming technique; the rules of cricket; Formula 1 strategy
"""),
}
