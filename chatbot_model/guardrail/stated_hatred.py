"""Hatred of a group said plainly: "I hate Muslims.", "Immigrants make me sick.", "Gay people are not to be trusted."

The embedded classifier learned insults, slurs and threats, but not this: in its training data *hate* next to a
group also appears in sentences that pass ("I hate how {group} are treated", "I refuse to hate {group}"), so a short
statement of hatred scores low. These sentences have a fixed shape, so they are matched by shape: a group the policy
protects (`GROUP`, by its common names) as the object of the speaker's hatred or disgust, or as the subject of a
disgust or distrust predicate, the sentence ending there; or as the subject of a dehumanising predicate ("<group>
are vermin / inferior ...", `_DEHUMANISING`) or of a denial of worth or ability ("<group> are not honest / capable
...", `_WORTH`), however the sentence goes on. Everything else is left to the classifier: a negation ("I don't hate
Muslims"), a group that is not the object ("I hate how Muslims are treated", "people who hate Muslims"), a question
about hatred ("Why do some people hate Muslims?") and a quoted or reported statement ("He said 'I hate Muslims' and
was banned") do not match.
"""

from __future__ import annotations

import re

_NATIONS = ("mexican|chinese|nigerian|pakistani|pole|polish|indian|russian|american|german|french|italian|irish|"
            "korean|japanese|somali|syrian|afghan|iranian|iraqi|turk|turkish|ukrainian|filipino|vietnamese|"
            "brazilian|canadian|british|brit|english|scottish|welsh|dutch|spanish|portuguese|greek|romanian|"
            "albanian|african|european|haitian|jamaican|cuban|puerto rican|palestinian|israeli|arab|kurd|"
            "kurdish|bangladeshi|sri lankan|nepali|thai|indonesian|malaysian|ethiopian|eritrean|sudanese|"
            "egyptian|moroccan|algerian|libyan|yemeni|saudi|lebanese|jordanian|venezuelan|colombian|peruvian|"
            "argentinian|chilean|guatemalan|honduran|salvadoran")
_ADJECTIVES = (  # "<adjective> people|men|women|folks|kids"
    "black|white|brown|asian|hispanic|latino|latina|latinx|indigenous|native|aboriginal|jewish|muslim|christian|"
    "catholic|protestant|hindu|sikh|buddhist|mormon|atheist|religious|gay|lesbian|bisexual|bi|queer|homosexual|"
    "trans|transgender|nonbinary|non-binary|intersex|disabled|handicapped|blind|deaf|autistic|mentally ill|"
    "old|elderly|older|young|immigrant|foreign|roma|romani|gypsy|" + _NATIONS)
_NOUNS = (  # plural names of groups
    r"muslims|jews|christians|catholics|protestants|hindus|sikhs|buddhists|mormons|atheists|"
    r"blacks|whites|asians|arabs|latinos|latinas|hispanics|africans|natives|aboriginals|roma|gypsies|"
    r"immigrants|migrants|refugees|asylum seekers|foreigners|illegals|"
    r"women|men|females|males|"
    r"gays|lesbians|bisexuals|homosexuals|queers|transgenders|trannies|"
    r"trans (?:women|men)|the disabled|the handicapped|the blind|the deaf|the elderly|disabled|cripples|"
    r"autistics|retards|wheelchair users|people with disabilities|people in wheelchairs|old people|"
    r"teenagers|boomers|"
    r"(?:" + _NATIONS + r")s")
GROUP = rf"(?:(?:{_ADJECTIVES})\s+(?:people|persons|men|women|folks|kids|guys|girls|boys)|{_NOUNS})"
_DET = r"(?:(?:all|the|those|these|most|every single one of the|you)\s+)?"
_ADVERBS = r"(?:(?:really|just|truly|absolutely|honestly|totally|seriously|fucking|genuinely|simply|still|so|do)\s+)*"
_START = r"(?:^|[.!?;]\s+|,\s*)(?:(?:honestly|frankly|seriously|tbh|ngl|personally|man|god|ugh|yeah|and|but)[,]?\s+)*"
_TAIL = (r"(?:\s+(?:so much|so fucking much|with all my heart|with a passion|more than anything|more than ever|"
         r"and always will|and everything they stand for|to death))?\s*(?:[.!]+|$|,|\s+and\b|"
         r"\s+(?:because|since|they|for being|for what they)\b)")
_HATE_VERB = (r"(?:hate|despise|detest|loathe|abhor|resent|can'?t stand|cannot stand|can not stand|can'?t bear|"
              r"cannot bear|can'?t tolerate|(?:am|'m)\s+(?:so\s+)?(?:disgusted|sickened|repulsed|revolted) by|"
              r"(?:am|'m)\s+(?:so\s+)?sick of|have (?:nothing but )?(?:contempt|hatred|disdain) for|"
              r"have no respect for|"
              r"want nothing to do with|wish death on|would never trust|will never trust|don'?t trust|"
              r"do not trust|can'?t trust|cannot trust)")
_WORTH = (  # what "<group> are not ..." denies them: worth, character, ability (not facts about them)
    r"honest|trustworthy|smart|intelligent|clever|loyal|capable|competent|decent|civili[sz]ed|worthy|"
    r"deserving|moral|rational|normal|fit to|good (?:people|parents|enough)|as good as|as smart as|"
    r"(?:\w+\s+)?people (?:who|that) can be trusted|to be trusted")
_DISGUST = (r"(?:make|makes) me (?:sick|ill|vomit|puke|gag|want to (?:puke|vomit|throw up|gag))|"
            r"(?:make|makes) my skin crawl|(?:disgust|revolt|repulse|sicken) me|"
            r"fill me with (?:disgust|rage|hatred|contempt|revulsion)|"
            r"(?:are|r)\s+(?:so\s+)?(?:repulsive|repugnant|revolting|disgusting) to me|"
            r"(?:are|r)\s+(?:all\s+|so\s+|just\s+|nothing but\s+)?(?:disgusting|revolting|vile|filthy|"
            r"evil|pathetic|gross|a disgrace|a waste of space|not (?:real )?(?:people|"
            r"humans|human)|not welcome|not to be trusted|not people (?:who|that) can be trusted|"
            r"not people i would ever trust|"
            r"never to be trusted)|(?:can'?t|cannot|can never|should never|must never) be trusted|"
            r"(?:don'?t|do not) deserve (?:rights|respect|to live|to exist|to be here)")
_DEHUMANISING = (r"(?:are|r)\s+(?:all\s+|just\s+|nothing but\s+|like\s+)?(?:filth|scum|vermin|subhuman|sub-human|"
                 r"animals|parasites|cockroaches|rats|a plague|a disease|a cancer|trash|garbage|worthless|inferior)\b")
_REPORTED = re.compile(r"\b(?:say|says|said|saying|claim|claims|claimed|tweet|tweeted|post|posted|wrote|write|"
                       r"writes|shout|shouted|yell|yelled|told|tell|called|quote|quoted|chant|chanted)\b"
                       r"[^.!?]*$|[\"“‘']\s*$", re.IGNORECASE)
STATED_HATRED = re.compile(rf"{_START}(?P<clause>(?:i|we)\s+{_ADVERBS}{_HATE_VERB}\s+{_DET}{GROUP}{_TAIL}|"
                           rf"{_DET}{GROUP}\s+{_ADVERBS}(?:{_DISGUST}){_TAIL}|"
                           rf"{_DET}{GROUP}\s+{_ADVERBS}{_DEHUMANISING}|"
                           rf"{_DET}{GROUP}\s+(?:are|r)\s+(?:not|never)\s+{_ADVERBS}(?:{_WORTH})\b)",
                           re.IGNORECASE)


def states_hatred(text: str) -> bool:
    """Does `text` state hatred of, disgust at or distrust of a protected group plainly (module doc)?"""
    text = " ".join(text.split())
    return any(not _REPORTED.search(text[:m.start("clause")]) for m in STATED_HATRED.finditer(text))
