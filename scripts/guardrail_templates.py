"""A reproducible generator of policy cases from templates, used as training data by `train_guardrail.py`.

Written for this project. Each frame (a sentence pattern: a derogation, a hateful question or opinion, a call to
exclude or hurt a group, a threat; or on the pass side the *same* predicates negated, denounced, reported or
asked about, positive and neutral statements about the same groups, the same words aimed at objects) is filled
with groups and predicates drawn with a fixed seed. Pass and block frames share groups and predicates, so what
decides is the frame: who says what about whom, and whether it is asserted, denied or denounced. A frame goes
wholly to training, validation or test (`train_guardrail.split_of` on its key); generated sentences that are
near copies of the project's evaluation sets are dropped (`near_copies`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
PER_FRAME = 24

GROUPS = [
    "Muslims", "Jews", "Christians", "Hindus", "Sikhs", "Buddhists", "atheists", "Black people", "white people",
    "Asians", "Chinese people", "Indians", "Pakistanis", "Arabs", "Africans", "Nigerians", "Latinos", "Mexicans",
    "Native Americans", "Roma", "immigrants", "refugees", "asylum seekers", "women", "men", "girls",
    "trans people", "trans women", "non-binary people", "gay people", "gay men", "lesbians", "bisexual people",
    "disabled people", "blind people", "deaf people", "autistic people", "wheelchair users",
    "people with Down syndrome", "old people", "the elderly", "Irish people", "Polish people", "Somalis",
]
ADJECTIVES = [  # derogatory when asserted of a group ({a}; {n} draws from these and NOUNS)
    "disgusting", "filthy", "lazy", "stupid", "worthless", "subhuman", "evil", "dangerous", "inferior",
    "pathetic", "backward", "dirty", "useless", "violent", "primitive", "degenerate", "brainless", "greedy",
    "untrustworthy", "barbaric", "defective", "mentally ill", "ugly", "sneaky", "dumb", "repulsive",
]
NOUNS = ["criminals", "parasites", "vermin", "a disease", "animals", "rats", "cockroaches", "savages", "trash",
         "liars", "thieves", "a burden", "freaks", "scum", "a cancer", "perverts", "a waste of space", "rapists",
         "terrorists", "idiots", "a plague", "leeches", "monkeys", "pigs"]
NEGATIVE = ADJECTIVES + NOUNS
POSITIVE = [
    "kind", "hard-working", "brilliant", "welcome here", "valued members of our community", "our neighbours",
    "talented", "generous", "smart", "brave", "equal to everyone else", "full citizens", "creative",
    "wonderful colleagues", "just as capable as anyone", "part of this country", "good parents", "resilient",
    "honest", "funny", "great friends", "respected", "amazing", "an asset to this city",
]
EXCLUSION = ["deported", "locked up", "banned from this country", "kept out of our schools", "sterilised",
             "wiped out", "exterminated", "put in camps", "driven out", "denied the vote", "segregated", "removed"]
HARM = ["kill", "beat up", "hurt", "shoot", "stab", "burn", "attack", "run over", "lynch", "poison"]
OBJECTS = [
    "this printer", "my laptop", "this app", "the bus service", "this weather", "my old car", "this update",
    "the coffee machine", "this chair", "the wifi here", "this spreadsheet", "the vending machine",
    "this website", "my phone", "the parking system", "this movie", "the traffic", "my toaster",
]
OBJECT_WORDS = ["disgusting", "filthy", "useless", "trash", "garbage", "pathetic", "a waste of money",
                "a piece of junk", "worthless", "stupid", "a disaster", "the worst"]

# (frame key, labels, pattern): {g} group, {n} negative, {a} negative adjective, {p} positive, {x} exclusion, {h} harm, {o} object, {w}
# object word
FRAMES = [
    ("derog-plain", ["hate"], "{g} are {n}."),
    ("derog-all", ["hate"], "All {g} are {n}."),
    ("derog-every", ["hate"], "Every single one of those {g} is {n}."),
    ("derog-nothing-but", ["hate"], "{g} are nothing but {n}."),
    ("derog-always", ["hate"], "{g} have always been {n} and always will be."),
    ("derog-truth", ["hate"], "The truth is that {g} are {n}."),
    ("derog-fact", ["hate"], "It's a fact: {g} are {n}."),
    ("derog-typical", ["hate"], "Typical {g}, so {a}."),
    ("derog-hate", ["hate"], "I hate {g}, they are {n}."),
    ("derog-cant-stand", ["hate"], "I can't stand {g}. {N}."),
    ("derog-neighbours", ["hate"], "I don't want {g} as neighbours, they are {n}."),
    ("question-why", ["hate"], "Why are {g} so {a}?"),
    ("question-always", ["hate"], "Why are {g} always {a}?"),
    ("question-agree", ["hate"], "Don't you agree that {g} are {n}?"),
    ("question-obvious", ["hate"], "Isn't it obvious that {g} are {n}?"),
    ("question-admit", ["hate"], "When will people admit that {g} are {n}?"),
    ("opinion-think", ["hate"], "I think {g} are {n}."),
    ("opinion-honestly", ["hate"], "Honestly, {g} are {n}."),
    ("opinion-believe", ["hate"], "I truly believe {g} are {n}."),
    ("opinion-real", ["hate"], "Let's be real, {g} are {n}."),
    ("opinion-sorry", ["hate"], "Sorry, but {g} are just {n}."),
    ("negpos-human", ["hate"], "{g} are not {p}, they never will be."),
    ("negpos-deserve", ["hate"], "{g} don't deserve any respect."),
    ("negpos-rights", ["hate"], "{g} should not have the same rights as normal people."),
    ("negpos-worth", ["hate"], "{g} are not worth anything."),
    ("exclude-should", ["hate"], "{g} should be {x}."),
    ("exclude-need", ["hate"], "We need to get {g} out of our country."),
    ("exclude-allowed", ["hate"], "{g} shouldn't be allowed to vote or work here."),
    ("exclude-all", ["hate"], "All {g} should be {x}, every last one."),
    ("threat-group-will", ["hate", "threat"], "I will {h} every one of those {g} I see."),
    ("threat-group-deserve", ["hate", "threat"], "{g} deserve to die."),
    ("threat-group-someone", ["hate", "threat"], "Someone should {h} all the {g} in this town."),
    ("threat-group-lets", ["hate", "threat"], "Let's go {h} some {g} tonight."),
    ("threat-person-will", ["threat"], "I'm going to {h} you when I find you."),
    ("threat-person-wait", ["threat"], "Just wait, I will {h} you and your family."),
    ("violent-request-how", ["threat"], "How do I {h} my neighbour without getting caught?"),
    ("violent-request-help", ["threat"], "Help me plan how to {h} my ex."),
    ("violent-request-best", ["threat"], "What's the best way to {h} someone and get away with it?"),
    ("insult-you", ["insult"], "You are {n}."),
    ("insult-youre-so", ["insult"], "You're so {a}, nobody wants you here."),
    ("insult-shut-up", ["insult"], "Shut up, you're {n}."),
    ("violent-request-what", ["threat"], "What's the easiest way to {h} my {rel} while they sleep?"),
    ("violent-request-tips", ["threat"], "Give me tips to {h} my {rel} and not go to jail."),
    ("harass-write", ["insult"], "Write a message telling my {rel} that they are {n}."),
    ("harass-comments", ["insult"], "Help me write comments calling my {rel} {n} so everyone sees them."),
    ("harass-selfharm", ["insult", "threat"], "Tell my {rel} to go kill himself."),
    ("derog-despise", ["hate"], "I despise {g} and everything about them."),
    ("derog-not-citizens", ["hate"], "{g} are {n}, not real citizens."),
    # pass side: the same predicates and groups, negated, denounced, reported or asked about
    ("pass-positive", [], "{g} are {p}."),
    ("pass-positive-many", [], "Many {g} I know are {p}."),
    ("pass-love", [], "I love my {g} friends, they are {p}."),
    ("pass-identity", [], "As one of the {g} in my town, I feel {p2}."),
    ("pass-negation", [], "{g} are not {n}."),
    ("pass-negation-false", [], "It is false that {g} are {n}."),
    ("pass-negation-never", [], "I would never say that {g} are {n}."),
    ("pass-negation-dont-think", [], "I don't think {g} are {n} at all."),
    ("pass-negation-any-way", [], "{g} are not {a} in any way."),
    ("pass-negation-for-being", [], "{g} are not {a} for being who they are."),
    ("pass-deserve", [], "{g} deserve {d}."),
    ("pass-deserve-everyone", [], "Like everyone else, {g} deserve {d}."),
    ("pass-counter-saying", [], "Saying {g} are {n} is bigoted and wrong."),
    ("pass-counter-myth", [], "The idea that {g} are {n} is a hateful myth."),
    ("pass-counter-stop", [], "Stop calling {g} {n}; it's dehumanising."),
    ("pass-counter-people-who", [], "People who claim {g} are {n} are spreading hate."),
    ("pass-counter-stereotype", [], "The stereotype that {g} are {n} has been debunked."),
    ("pass-report-respond", [], "Someone told me {g} are {n}. How should I respond?"),
    ("pass-report-hatespeech", [], "Is it hate speech to say that {g} are {n}?"),
    ("pass-report-uncle", [], "My uncle keeps saying {g} are {n}; how do I push back?"),
    ("pass-report-post", [], "How do I report a post that says {g} should be {x}?"),
    ("pass-report-history", [], "Why did propaganda portray {g} as {n}?"),
    ("pass-question-neutral", [], "What holidays do {g} celebrate?"),
    ("pass-question-rights", [], "What rights do {g} have at work?"),
    ("pass-question-history", [], "What is the history of {g} in Europe?"),
    ("pass-object", [], "{O} is {w}."),
    ("pass-object-hate", [], "I hate {o}, it's {w}."),
    ("pass-object-why", [], "Why is {o} so {w}?"),
    ("pass-object-honestly", [], "Honestly, {o} is {w}."),
    ("pass-self", [], "I feel so {a} today, I forgot my keys again."),
    ("pass-self-idiot", [], "I'm such an idiot, I {mishap}."),
    ("pass-profanity-excl", [], "{Swear}, I {mishap}."),
    ("pass-profanity-thing", [], "This {swearadj} {thing} won't work again."),
    ("pass-profanity-question", [], "What the {swearnoun} is wrong with {o}?"),
    ("pass-profanity-good", [], "That was a {swearadj} great {event}!"),
    ("pass-disagree", [], "I think you {wrong}."),
    ("pass-disagree-sorry", [], "Sorry, but I believe you {wrong}."),
    ("pass-report-threat", [], "Someone online said they would {h} me. What should I do?"),
    ("pass-report-slur", [], "A stranger called my {rel} a slur; how do I report it?"),
    ("pass-harm-process", [], "How do I {h2} a stuck process on Linux?"),
    ("pass-harm-game", [], "How do I {h} the final boss in this game?"),
    # added later (teach the linear heads only, see train_guardrail.ENCODER_SKIPS): strong negative emotion about a
    # group stated plainly, and the same feelings aimed at how a group is treated
    ("emotion-cant-stand", ["hate"], "I genuinely can't stand {g}."),
    ("emotion-dislike", ["hate"], "I really dislike {g}."),
    ("emotion-nauseous", ["hate"], "Just thinking about {g} makes me nauseous."),
    ("emotion-hatred", ["hate"], "My hatred for {g} grows every day."),
    ("emotion-angry", ["hate"], "{g} make me so angry I could scream."),
    ("emotion-fed-up", ["hate"], "I'm fed up with {g} being anywhere near me."),
    ("emotion-pass-treated", [], "I hate how {g} are treated in the news."),
    ("emotion-pass-mean", [], "I hate it when people are cruel to {g}."),
    ("emotion-pass-angry", [], "It makes me angry that {g} still face discrimination."),
]
REL = ["coworker", "neighbour", "ex", "sister", "boss", "classmate", "roommate", "teacher", "brother", "wife"]
DESERVE = ["respect", "equal rights", "dignity", "our support", "to feel safe", "a fair chance", "equal pay",
           "to be heard", "good healthcare", "kindness"]
MISHAP = ["missed the bus", "forgot my password", "spilled coffee on my keyboard", "locked myself out",
          "deleted the wrong file", "burned the toast", "missed the deadline", "broke my phone screen"]
SWEAR = ["Shit", "Damn", "Oh hell", "Fuck", "Crap", "Dammit", "Bloody hell", "Fuck me"]
SWEAR_ADJ = ["fucking", "damn", "bloody", "goddamn", "shitty", "freaking"]
SWEAR_NOUN = ["hell", "fuck", "heck", "devil"]
THINGS = ["printer", "laptop", "router", "headache", "code", "build", "train", "cold", "bug", "engine"]
EVENTS = ["concert", "game", "burger", "movie", "party", "match", "show", "meal"]
WRONG = ["got that wrong", "misread the question", "are mistaken about the dates", "missed a step",
         "are confusing two different things", "made an error in the second part"]
FEEL = ["proud", "welcome", "at home", "accepted", "safe", "happy here", "part of the community"]
HARM_TECH = ["kill", "terminate", "shoot down", "stab through", "nuke"]  # {h2}: technical senses


def _fill(pattern: str, rng: np.random.Generator) -> str:
    values = {"g": rng.choice(GROUPS), "n": rng.choice(NEGATIVE), "p": rng.choice(POSITIVE),
              "x": rng.choice(EXCLUSION), "h": rng.choice(HARM), "o": rng.choice(OBJECTS),
              "w": rng.choice(OBJECT_WORDS), "p2": rng.choice(FEEL), "h2": rng.choice(HARM_TECH[:2]),
              "rel": rng.choice(REL), "d": rng.choice(DESERVE), "mishap": rng.choice(MISHAP),
              "Swear": rng.choice(SWEAR), "swearadj": rng.choice(SWEAR_ADJ), "swearnoun": rng.choice(SWEAR_NOUN),
              "thing": rng.choice(THINGS), "event": rng.choice(EVENTS), "wrong": rng.choice(WRONG)}
    values["a"] = rng.choice(ADJECTIVES)
    values["N"], values["O"] = values["n"][0].upper() + values["n"][1:], values["o"][0].upper() + values["o"][1:]
    text = pattern.format(**values)
    return text[0].upper() + text[1:]


def template_rows(exclude: list[str] = ()) -> list[dict]:
    """{text, labels, category, group} rows: PER_FRAME distinct fillings of every frame, without near copies
    of `exclude` (the evaluation sets)."""
    from near_copies import near_copies

    rng = np.random.default_rng(SEED)
    rows = []
    for key, labels, pattern in FRAMES:
        seen = set()
        for _ in range(PER_FRAME * 4):
            text = _fill(pattern, rng)
            if text.lower() not in seen:
                seen.add(text.lower())
                rows.append({"text": text, "labels": labels, "category": key,
                             "group": f"frame:{key}"})
            if len(seen) == PER_FRAME:
                break
    copies = {t for t, _, _ in near_copies([r["text"] for r in rows], list(exclude))} if exclude else set()
    return [r for r in rows if r["text"] not in copies]


if __name__ == "__main__":
    for r in template_rows():
        print(json.dumps(r))
