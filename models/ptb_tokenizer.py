"""The Penn Treebank tokenizer of the COCO caption evaluation, in Python.

``pycocoevalcap`` tokenizes captions by running Stanford CoreNLP 3.4.1's ``PTBTokenizer`` (Java) with
``-preserveLines -lowerCase`` over all captions joined by newlines, then drops the tokens in
:data:`PUNCTUATIONS`. This module reimplements that lexer (``PTBLexer``, a JFlex scanner) with the
options that command line sets, so that caption metrics equal the published ones without Java:

    ptb_tokenize_lines(["A 3.5-cm mass (arrow).", "Fig. 2: e.g., at 3 o'clock"])
    # -> ['a 3.5-cm mass -lrb- arrow -rrb-', "fig. 2 e.g. at 3 o'clock"]

How the scanner decides, as JFlex does: at each position every rule is tried; the longest match wins
(a rule's trailing context ``r1/r2`` counts in its length, though only ``r1`` becomes the token), and
among equally long matches the rule listed first. Literal text in a rule matches in any case (the
scanner is ``%caseless``), character classes only as written. Captions are lexed as one stream, as the
Java command reads them, so the start of the next caption can decide how the last word of the previous
one splits ("etc." before a capital letter is also a sentence end).

Known limits: letters and digits are Python's Unicode classes, not the 2014 JDK's (they differ only
for characters added to Unicode since); characters outside the Basic Multilingual Plane are dropped
(Java sees two surrogates, which its rules drop too). Line breaks other than ``\\n`` inside a caption
(``\\r``, U+2028, U+2029, U+000B, U+000C) count as spaces here; pycocoevalcap's own run would start a new
output line at each and pair every later caption with the wrong tokens.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

# Tokens pycocoevalcap removes after tokenization (compared after lower-casing, so "-lrb-" stays).
PUNCTUATIONS = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])
NEWLINE_TOKEN = "*NL*"


def _class_of(test: Callable[[str], bool]) -> str:
    """A regex character-class body of the Basic Multilingual Plane characters passing ``test``."""
    ranges, start, prev = [], None, None
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF or not test(chr(code)):
            continue
        if prev is not None and code == prev + 1:
            prev = code
            continue
        if start is not None:
            ranges.append((start, prev))
        start = prev = code
    ranges.append((start, prev))
    esc = lambda c: f"\\u{c:04x}"  # noqa: E731
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


def _ci(words: str) -> str:
    """``a|b|c`` matched in any case (the scanner's literal text), as a group."""
    return f"(?i:{words})"


def _macros() -> dict[str, str]:
    """PTBLexer's macros as Python regexes. Classes keep their case; literal text is wrapped in _ci."""
    m: dict[str, str] = {}
    m["L"] = f"[{_class_of(lambda c: unicodedata.category(c) in ('Lu', 'Ll', 'Lt', 'Lm', 'Lo'))}]"
    m["D0"] = f"[{_class_of(lambda c: unicodedata.category(c) == 'Nd')}]"
    m["UPPER"] = f"[{_class_of(lambda c: unicodedata.category(c) == 'Lu')}]"
    m["SPACE"] = "[ \\t\\u00a0\\u2000-\\u200a\\u3000]"
    m["NEWLINE"] = "(?:\\r\\n|\\r|\\n|\\u2028|\\u2029|\\u000b|\\u000c|\\u0085)"
    m["SPACENL"] = f"(?:{m['SPACE']}|{m['NEWLINE']})"
    m["SPACENLS"] = f"(?:{m['SPACENL']})+"
    name = "[A-Za-z][A-Za-z0-9_:.\\-]*"
    m["SGML"] = (f"<(?:[!?][A-Za-z\\-][^>\\r\\n]*|{name}(?:[ ]+(?:{name}|{name}[ ]*=[ ]*(?:'[^']*'|\"[^\"]*\")))*[ ]*/?"
                 f"|/{name})[ ]*>")
    m["SENTEND"] = f"{m['SPACENL']}(?:{m['SPACENL']}|{m['UPPER']}|{m['SGML']})"
    m["DIGIT"] = f"(?:{m['D0']}|[\\u07c0-\\u07c9])"
    d = m["DIGIT"]
    m["DATE"] = f"{d}{{1,2}}[\\-/]{d}{{1,2}}[\\-/]{d}{{2,4}}"
    m["NUMBER"] = f"[\\-+]?(?:{d}+|{d}*(?:[.:,\\u00ad\\u066b\\u066c]{d}+)+)"
    m["SUBSUPNUM"] = "[\\u207a\\u207b\\u208a\\u208b]?(?:[\\u2070\\u00b9\\u00b2\\u00b3\\u2074-\\u2079]+|[\\u2080-\\u2089]+)"
    m["FRAC"] = f"(?:{d}{{1,4}}[\\- \\u00a0])?{d}{{1,4}}(?:\\\\?/|\\u2044){d}{{1,4}}"
    m["FRAC2"] = "[\\u00bc\\u00bd\\u00be\\u2153-\\u215e]"
    m["DOLSIGN"] = "(?:[A-Z]*\\$|#)"
    m["DOLSIGN2"] = "[\\u00a2\\u00a3\\u00a4\\u00a5\\u0080\\u20a0\\u20ac\\u060b\\u0e3f\\u20a4\\uffe0\\uffe1\\uffe5\\uffe6]"
    m["SPAMP"] = f"&{_ci('amp')};"
    m["SPLET"] = f"&[aeiouAEIOU]{_ci('acute|grave|uml')};"
    extra_letters = ("\\u00ad\\u0237-\\u024f\\u02c2-\\u02c5\\u02d2-\\u02df\\u02e5-\\u02ff\\u0300-\\u036f\\u0370-\\u037d"
                     "\\u0384\\u0385\\u03cf\\u03f6\\u03fc-\\u03ff\\u0483-\\u0487\\u04cf\\u04f6-\\u04ff\\u0510-\\u0525"
                     "\\u055a-\\u055f\\u0591-\\u05bd\\u05bf\\u05c1\\u05c2\\u05c4\\u05c5\\u05c7\\u0615-\\u061a"
                     "\\u063b-\\u063f\\u064b-\\u065e\\u0670\\u06d6-\\u06ef\\u06fa-\\u06ff\\u070f\\u0711\\u0730-\\u074f"
                     "\\u0750-\\u077f\\u07a6-\\u07b1\\u07ca-\\u07f5\\u07fa\\u0900-\\u0903\\u093c\\u093e-\\u094e"
                     "\\u0951-\\u0955\\u0962-\\u0963\\u0981-\\u0983\\u09bc-\\u09c4\\u09c7\\u09c8\\u09cb-\\u09cd\\u09d7"
                     "\\u09e2\\u09e3\\u0a01-\\u0a03\\u0a3c\\u0a3e-\\u0a4f\\u0a81-\\u0a83\\u0abc-\\u0acf\\u0b82"
                     "\\u0bbe-\\u0bc2\\u0bc6-\\u0bc8\\u0bca-\\u0bcd\\u0c01-\\u0c03\\u0c3e-\\u0c56\\u0d3e-\\u0d44"
                     "\\u0d46-\\u0d48\\u0e30-\\u0e3a\\u0e47-\\u0e4e\\u0eb1-\\u0ebc\\u0ec8-\\u0ecd")
    m["LETTER"] = f"(?:{m['L']}|{m['SPLET']}|[{extra_letters}])"
    ld = f"(?:{m['LETTER']}|{d})"
    m["WORD"] = f"{m['LETTER']}{ld}*(?:[.!?]{m['LETTER']}{ld}*)*"
    ext = ("bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|"
           "ppt|ps|py|sql|tar|txt|wav|x|xml|zip")
    m["FILENAME"] = f"{ld}+(?:[.]{ld}+)*(?:[.]{_ci(ext)})"
    m["APOS"] = f"(?:['\\u0092\\u2019]|&{_ci('apos')};)"
    m["APOSETC"] = f"(?:{m['APOS']}|[`\\u0091\\u2018\\u201b])"
    ap, ape, let = m["APOS"], m["APOSETC"], m["L"]
    raw_ld = f"(?:{let}|{m['D0']})"  # THING uses the plain [:letter:] / [:digit:] classes
    m["HYPHEN"] = "[\\-_\\u058a\\u2010\\u2011]"
    head = f"(?:[dDoOlL]{ape}{raw_ld})?{raw_ld}+"
    m["THING"] = f"{head}(?:{m['HYPHEN']}{head})*"
    m["THINGA"] = f"[A-Z]+(?:(?:[+&]|{m['SPAMP']})[A-Z]+)+"
    m["THING3"] = "[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
    acro_tail = (f"|{_ci('canada|sino|korean|eu|japan|non')}-{_ci('u')}\\.{_ci('s')}"
                 f"|{_ci('u')}\\.{_ci('s')}\\.-(?:{_ci('u')}\\.{_ci('k')}|{_ci('u')}\\.{_ci('s')}\\.{_ci('s')}\\.{_ci('r')})")
    m["ACRO"] = f"(?:[A-Za-z](?:\\.[A-Za-z])*{acro_tail})"
    m["ACRO2"] = f"(?:[A-Za-z](?:\\.[A-Za-z])+{acro_tail})"
    m["HTHING"] = f"[A-Za-z0-9][A-Za-z0-9.,\\u00ad]*(?:-(?:[A-Za-z0-9\\u00ad]+|{m['ACRO2']}\\.))+"
    m["REDAUX"] = f"{ap}(?:[msdMSD]|{_ci('re|ve|ll')})"
    m["SWORD"] = "[A-Za-z\\u00ad]*[A-MO-Za-mo-z]\\u00ad*"
    m["SREDAUX"] = f"{_ci('n')}{ape}{_ci('t')}"
    m["APOWORD"] = "|".join([
        f"{ap}{_ci('n')}{ap}?", f"[lLdDjJ]{ap}", f"{_ci('dunkin')}{ap}", f"{_ci('somethin')}{ap}", f"{_ci('ol')}{ap}",
        f"{ap}{_ci('em')}", f"[A-HJ-XZn]{ape}{let}{{2}}{let}*", f"{ap}[2-9]{_ci('0s')}", f"{ap}{_ci('till?')}",
        f"{let}{let}*[aeiouyAEIOUY]{ape}[aeiouA-Z]{let}*", f"{ap}{_ci('cause')}",
        _ci("cont'd\\.?|'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l"), f"{_ci('o')}{ape}{_ci('o')}"])
    m["APOWORD2"] = f"{_ci('y')}{ap}"
    m["FULLURL"] = f"{_ci('https?')}://[^ \\t\\n\\f\\r\"<>|(){{}}]+[^ \\t\\n\\f\\r\"<>|.!?(){{}},\\-]"
    # "[^ ... ,-_$]" in the original is a range from ',' to '_': digits and capitals cannot start a host name.
    host = "[^ \\t\\n\\f\\r\"`'<>|.!?(){}\\x2c-\\x5f$]"
    m["LIKELYURL"] = (f"(?:(?:{_ci('www')}\\.(?:[^ \\t\\n\\f\\r\"<>|.!?(){{}},]+\\.)+[a-zA-Z]{{2,4}})"
                      f"|(?:(?:{host}+\\.)+{_ci('com|net|org|edu')}))"
                      f"(?:/[^ \\t\\n\\f\\r\"<>|()]+[^ \\t\\n\\f\\r\"<>|.!?(){{}},\\-])?")
    part = "[^ \\t\\n\\f\\r\"<>|(){}.\\u00a0]+"
    m["EMAIL"] = (f"(?:&{_ci('lt')};|<)?[a-zA-Z0-9][^ \\t\\n\\f\\r\"<>|()\\u00a0{{}}]*@(?:{part}\\.)*(?:{part})"
                  f"(?:&{_ci('gt')};|>)?")
    m["TWITTER"] = f"(?:@[a-zA-Z_][a-zA-Z_0-9]*|#{m['LETTER']}+)"
    states = (f"{_ci('ala|ariz')}|A{_ci('z')}|A{_ci('rk')}|{_ci('calif|colo|conn|ct|dak')}|D{_ci('el')}|{_ci('fla|ga')}"
              f"|I{_ci('ll')}|{_ci('ind|kans?|ky')}|L{_ci('a')}|M{_ci('ass')}|{_ci('md|mich|minn')}|M{_ci('iss')}"
              f"|{_ci('mo|mont|neb|nev|okla')}|O{_ci('re')}|P{_ci('a')}|{_ci('penn|tenn')}|T{_ci('ex')}|{_ci('va|vt')}"
              f"|W{_ci('ash')}|{_ci('wisc?|wyo')}")
    companies = f"{_ci('inc|cos?|corp')}|{_ci('pp?t')}[ye]{_ci('s')}?|{_ci('ltd|plc|rt|bancorp|bhd|assn|univ|intl|sys')}"
    abbrev1 = "|".join([_ci("jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"), _ci("mon|tue|tues|wed|thu|thurs|fri"),
                        states, companies, _ci("tel|est|ext|sq"), _ci("jr|sr|bros|(?:ed|ph)\\.d|blvd|rd|esq"),
                        _ci("etc|al|seq|bldg")])
    m["ABBREV1"] = f"(?:{abbrev1})\\."
    titles = (f"{_ci('mr|mrs|ms')}|M{_ci('iss')}|{_ci('drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj')}"
              f"|{_ci('sgt|cpl|pvt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|mt|ft|adj|adv|asst')}"
              f"|{_ci('assoc|ens|insp|mlle|mme|msgr|sfc')}")
    comp2 = f"{_ci('invt|elec|natl')}|{_ci('m')}[ft]{_ci('g')}|{_ci('dept')}"
    others = _ci("vs|alex|wm|jos|cie|a\\.k\\.a|cf|treas|ph")
    m["ABBREV4"] = f"(?:{titles}|{others}|{m['ACRO']}|{comp2})"
    m["ABBREV2"] = f"{m['ABBREV4']}\\."
    m["ACRONYM"] = f"{m['ACRO']}\\."
    m["ABBREV3"] = f"{_ci('ca|figs?|prop|nos?|art|bldg|prop|pp|op')}\\."
    m["PHONE"] = ("(?:\\([0-9]{2,3}\\)[ \\u00a0]?|(?:\\+\\+?)?(?:[0-9]{2,4}[\\- \\u00a0])?[0-9]{2,4}[\\- \\u00a0])"
                  "[0-9]{3,4}[\\- \\u00a0]?[0-9]{3,5}|(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5}")
    m["LDOTS"] = "(?:\\.{3,5}|(?:\\.[ \\u00a0]){2,4}\\.|[\\u0085\\u2026])"
    m["INSENTP"] = "[,;:\\u3001]"
    m["QUOTES"] = (f"(?:{ap}|''|[`\\u2018\\u2019\\u201a\\u201b\\u201c\\u201d\\u0091\\u0092\\u0093\\u0094\\u201e\\u201f"
                   f"\\u2039\\u203a\\u00ab\\u00bb]{{1,2}})")
    m["DBLQUOT"] = f"(?:\"|&{_ci('quot')};)"
    m["TBSPEC"] = "|".join([f"-{_ci('rrb|lrb|rcb|lcb|rsb|lsb')}-", _ci("c\\.d\\.s|pro-|anti-"),
                            f"{_ci('s')}(?:&|{m['SPAMP']}){_ci('p-500')}", f"{_ci('s')}(?:&|{m['SPAMP']}){_ci('ls')}",
                            f"{_ci('cap')}{ap}{_ci('n')}", f"{_ci('c')}{ap}{_ci('est')}"])
    m["SMILEY"] = "[<>]?[:;=][\\-o*']?[()DPdpO\\\\{@|\\[\\]]"
    sm = "\\-\\^x=~<>'"
    m["ASIANSMILEY"] = (f"[\\^x=~<>]\\.\\[\\^{_ci('x')}=~<>\\]|[{sm}]_[{sm}]|\\([{sm}][_.]?[{sm}]\\)"
                        f"|\\([\\^x=~<>']-[\\^x=~<>'`]\\)")
    m["MISCSYMBOL"] = ("[+%&~\\^|\\\\\\u00a6\\u00a7\\u00a8\\u00a9\\u00ac\\u00ae\\u00af\\u00b0-\\u00b3\\u00b4-\\u00ba"
                       "\\u00d7\\u00f7\\u0387\\u05be\\u05c0\\u05c3\\u05c6\\u05f3\\u05f4\\u0600-\\u0603\\u0606-\\u060a"
                       "\\u060c\\u0614\\u061b\\u061e\\u066a\\u066d\\u0703-\\u070d\\u07f6\\u07f7\\u07f8\\u0964\\u0965"
                       "\\u0e4f\\u1fbd\\u2016\\u2017\\u2020-\\u2023\\u2030-\\u2038\\u203b\\u203e-\\u2042\\u2044"
                       "\\u207a-\\u207f\\u208a-\\u208e\\u2100-\\u214f\\u2190-\\u21ff\\u2200-\\u2bff\\u3012\\u30fb"
                       "\\uff01-\\uff0f\\uff1a-\\uff20\\uff3b-\\uff40\\uff5b-\\uff65]")
    return m


@dataclass(frozen=True)
class _Rule:
    """One scanner rule: ``pattern`` (the token) with an optional ``trailing`` context, an ``action`` that
    makes the token, and a ``window``: how far a match may reach (``word`` rules never cross a space)."""

    pattern: re.Pattern
    trailing: re.Pattern | None
    action: str
    window: str = "word"


def _rules() -> list[_Rule]:
    """PTBLexer's rules in their order (the first of equally long matches wins), for the options of
    ``PTBTokenizer -preserveLines -lowerCase``: PTB3 normalizations on, no Americanization, no escaping of
    ``/`` and ``*``, traditional (not strict) Treebank 3 fractions, newlines returned as tokens."""
    m = _macros()
    quick = [  # (pattern, trailing, action, window)
        (f"{_ci('c')}\\+\\+", None, "plain", "word"),
        (_ci("c|f") + "#", None, "plain", "word"),
        (_ci("cannot"), None, "push3", "word"),
        (_ci("'twas"), None, "push3", "word"),
        (_ci("'tis"), None, "push2", "word"),
        (_ci("gonna|gotta|lemme|gimme|wanna"), None, "push2", "word"),
        (m["SGML"], None, "nbsp", "line"),
        (f"&{_ci('md|mdash|ndash')};|[\\u0096\\u0097\\u2013\\u2014\\u2015]", None, "dash", "word"),
        (m["SPAMP"], None, "amp", "word"),
        (f"&(?:{_ci('ht|tl|ur|lr|qc|ql|qr|odq|cdq')}|#[0-9]+);", None, "plain", "word"),
        (m["WORD"], m["REDAUX"], "soft", "word"),
        (m["SWORD"], m["SREDAUX"], "soft", "word"),
        (m["WORD"], None, "soft", "word"),
        (m["APOWORD"], None, "plain", "word"),
        (m["APOWORD2"], m["L"], "plain", "word"),
        (m["FULLURL"], None, "plain", "ascii"),
        (m["LIKELYURL"], None, "plain", "ascii"),
        (m["EMAIL"], None, "plain", "ascii"),
        (m["TWITTER"], None, "plain", "word"),
        (m["REDAUX"], "[^A-Za-z]", "right_quote", "word"),
        (m["SREDAUX"], "[^A-Za-z]", "right_quote", "word"),
        (m["DATE"], None, "plain", "word"),
        (m["NUMBER"], None, "soft", "word"),
        (m["SUBSUPNUM"], None, "plain", "word"),
        (m["FRAC"], None, "nbsp", "frac"),
        (m["FRAC2"], None, "fraction", "word"),
        (m["TBSPEC"], None, "amp", "word"),
        (m["THING3"], None, "plain", "word"),
        (m["DOLSIGN"], None, "plain", "word"),
        (m["DOLSIGN2"], None, "currency", "word"),
        (m["ACRONYM"], (f"{m['SPACENLS']}(?:A(?i:bout|ccording|dditionally|fter|n|s|t)?|B(?i:ut)|E(?i:arlier)"
                        f"|H(?i:e|er|ere|owever)|I(?i:f|n|t)|L(?i:ast)|M(?i:any|ore|r\\.|s\\.)|N(?i:ow)"
                        f"|O(?i:nce|ne|ther|ur)|S(?i:he|ince|o|ome|uch)|T(?i:hat|he|heir|hen|here|hese|hey|his)"
                        f"|W(?i:e|hen|hile|hat)|Y(?i:et|ou)|{m['SGML']}){m['SPACENL']}"), "acronym", "word"),
        (m["ABBREV3"], f"{m['SPACENL']}?{m['D0']}", "plain", "word"),
        (f"(?:{_ci('pt')}[eyEY]|{_ci('co')})\\.", f"{m['SPACE']}{_ci('ltd|lim')}", "plain", "word"),
        (m["ABBREV1"], m["SENTEND"], "sentence_end", "word"),
        (m["ABBREV1"], "[\\s\\S][\\s\\S]", "plain", "word"),
        (m["ABBREV1"], None, "sentence_end", "word"),
        (m["ABBREV2"], None, "plain", "word"),
        (m["ABBREV4"], m["SPACE"], "plain", "word"),
        (m["ACRO"], m["SPACENL"], "plain", "word"),
        (f"{m['APOS']}[0-9][0-9]", m["SPACENL"], "plain", "word"),
        (m["FILENAME"], f"{m['SPACENL']}|[.?!,]", "plain", "word"),
        (f"{m['WORD']}\\.", m["INSENTP"], "soft", "word"),
        (m["PHONE"], None, "phone", "phone"),
        (m["DBLQUOT"], "[A-Za-z0-9$]", "left_quote", "word"),
        (m["DBLQUOT"], None, "right_quote", "word"),
        ("\\x7f", None, "skip", "word"),
        (f"<|&{_ci('lt')};", None, "lt", "word"),
        (f">|&{_ci('gt')};", None, "gt", "word"),
        (m["SMILEY"], "[^A-Za-z0-9]", "paren", "word"),
        (m["ASIANSMILEY"], None, "paren", "word"),
        ("\\{", None, "-LCB-", "word"), ("\\}", None, "-RCB-", "word"),
        ("\\[", None, "-LSB-", "word"), ("\\]", None, "-RSB-", "word"),
        ("\\(", None, "-LRB-", "word"), ("\\)", None, "-RRB-", "word"),
        ("-+", None, "hyphens", "word"),
        (m["LDOTS"], None, "...", "dots"),
        ("@+|#+|_+", None, "plain", "word"),
        ("\\*+|(?:\\\\\\*){1,3}", None, "plain", "word"),
        (m["INSENTP"], None, "plain", "word"),
        ("[?!]+", None, "plain", "word"),
        ("[.\\u00a1\\u00bf\\u037e\\u0589\\u061f\\u06d4\\u0700-\\u0702\\u07fa\\u3002]", None, "plain", "word"),
        ("=", None, "plain", "word"),
        ("/", None, "plain", "word"),
        (f"{m['HTHING']}\\.", m["INSENTP"], "soft", "word"),
        (m["HTHING"], None, "soft", "word"),
        (f"{m['THING']}\\.", m["INSENTP"], "plain", "word"),
        (m["THING"], None, "plain", "word"),
        (f"{m['THINGA']}\\.", m["INSENTP"], "amp", "word"),
        (m["THINGA"], None, "amp", "word"),
        ("'", "[A-Za-z][^ \\t\\n\\r\\u00a0]", "left_quote", "word"),
        (m["REDAUX"], None, "right_quote", "word"),
        (m["SREDAUX"], None, "right_quote", "word"),
        (m["QUOTES"], None, "right_quote", "word"),
        ("<<|>>", None, "plain", "word"),
        (m["MISCSYMBOL"], None, "plain", "word"),
        ("\\x00|[ \\t\\u00a0\\u2000-\\u200a\\u3000]+|[\\u200b\\u200e\\u200f\\ufeff]", None, "skip", "greedy"),
        (m["NEWLINE"], None, "newline", "greedy"),
        (_ci("&nbsp;"), None, "skip", "word"),
        ("[^\\n]", None, "skip", "word"),  # untokenizable: dropped (the command's default, firstDelete)
    ]
    return [_Rule(re.compile(p), re.compile(t) if t else None, a, w) for p, t, a, w in quick]


_BREAKS = re.compile("[ \\t\\n\\r\\f\\u000b\\u0085\\u00a0\\u2000-\\u200a\\u2028\\u2029\\u3000]")
_ASCII_BREAKS = re.compile("[ \\t\\n\\r\\f]")
_LINE_BREAKS = re.compile("[\\n\\r]")
_FIXED_WINDOW = {"frac": 16, "phone": 32, "dots": 10}
_OTHER_NEWLINES = re.compile("[\\r\\u2028\\u2029\\u000b\\u000c]")
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = [("\u00a2", "cents"), ("\u00a3", "#"), ("\u0080", "$"), ("\u00a4", "$"), ("\u20a0", "$"), ("\u20ac", "$")]
_LEFT_QUOTES = [(re.compile("&apos;|'"), "`"), (re.compile("\"|&quot;"), "``")]
_RIGHT_QUOTES = [(re.compile("&apos;|'"), "'"), (re.compile("\"|&quot;"), "''")]
_CURLY_QUOTES = [(re.compile("[\u0091\u2018\u201b\u2039]"), "`"), (re.compile("[\u0092\u2019\u203a]"), "'"),
                 (re.compile("[\u0093\u201c\u00ab]"), "``"), (re.compile("[\u0094\u201d\u00bb]"), "''")]
_AMP = re.compile("(?i:&amp;)")


@lru_cache(maxsize=1)
def _compiled() -> list[_Rule]:
    return _rules()


def _next_break(pattern: re.Pattern, text: str) -> list[int]:
    """For each index i, the index of the first character matching ``pattern`` after i (or len(text))."""
    out, nxt = [len(text)] * (len(text) + 1), len(text)
    starts = [mm.start() for mm in pattern.finditer(text)]
    for i in range(len(text) - 1, -1, -1):
        while starts and starts[-1] > i:
            nxt = starts.pop()
        out[i] = nxt
    return out


def _longest(pattern: re.Pattern, text: str, pos: int, end: int) -> int:
    """The end of the longest match of ``pattern`` at ``pos`` within ``text[:end]`` (JFlex's rule, not the
    first alternative that matches as Python's ``re`` would), or -1."""
    found = pattern.match(text, pos, end)
    if found is None:
        return -1
    for stop in range(end, found.end(), -1):
        if pattern.fullmatch(text, pos, stop):
            return stop
    return found.end()


def _match(rule: _Rule, text: str, pos: int, end: int) -> tuple[int, int]:
    """(total length with the trailing context, token end) of ``rule`` at ``pos``, or (-1, -1)."""
    if rule.trailing is None and rule.window == "greedy":  # runs of one class: the greedy match is the longest
        found = rule.pattern.match(text, pos)
        return (found.end() - pos, found.end()) if found else (-1, -1)
    if rule.trailing is None:
        stop = _longest(rule.pattern, text, pos, end)
        return (stop - pos, stop) if stop > 0 else (-1, -1)
    if rule.pattern.match(text, pos, end) is None:
        return -1, -1
    best = (-1, -1)
    for stop in range(end, pos, -1):
        if rule.pattern.fullmatch(text, pos, stop):
            context = rule.trailing.match(text, stop)
            if context is not None and context.end() - pos > best[0]:
                best = (context.end() - pos, stop)
    return best


def _quotes(token: str, left: bool) -> str:
    for pattern, repl in (_LEFT_QUOTES if left else _RIGHT_QUOTES) + _CURLY_QUOTES:
        token = pattern.sub(repl, token)
    return token


def _soft(token: str) -> str:
    """Soft hyphens removed (they only mark where a line may break); never an empty token."""
    return token.replace("\u00ad", "") or "-"


def _act(action: str, token: str) -> tuple[str | None, int]:
    """The token a rule's action makes of the matched text, and how many characters it consumes."""
    n = len(token)
    if action == "plain":
        return token, n
    if action.startswith("push"):
        back = int(action[4:])
        return token[:-back], n - back
    if action in ("skip",):
        return None, n
    if action == "newline":
        return NEWLINE_TOKEN, n
    if action == "soft":
        return _soft(token), n
    if action == "nbsp":
        return token.replace(" ", "\u00a0"), n
    if action == "amp":
        return _AMP.sub("&", token), n
    if action == "dash":
        return "--", n
    if action == "fraction":
        return _FRACTIONS.get(token, token), n
    if action == "currency":
        for old, new in _CURRENCY:
            token = token.replace(old, new)
        return token, n
    if action in ("left_quote", "right_quote"):
        return _quotes(token, action == "left_quote"), n
    if action == "acronym":  # a one-letter "I." gives "I" then "."; longer ones give "U.S." and then "." again
        return (token[:-1], n - 1) if n == 2 else (token, n - 1)
    if action == "sentence_end":  # "etc." ending a sentence: "etc." and then "." again
        return token, n - 1
    if action == "phone":
        return token.replace(" ", "\u00a0").replace("(", "-LRB-").replace(")", "-RRB-"), n
    if action == "paren":
        return token.replace("(", "-LRB-").replace(")", "-RRB-"), n
    if action == "hyphens":
        return ("--" if 3 <= n <= 4 else token), n
    if action in ("lt", "gt"):
        return ("<" if action == "lt" else ">"), n
    return action, n  # a fixed token: "...", "-LRB-", ...


def ptb_tokens(text: str) -> list[str]:
    """PTBLexer's tokens of ``text`` (original case), with :data:`NEWLINE_TOKEN` for each line break."""
    rules = _compiled()
    n = len(text)
    nexts = {"word": _next_break(_BREAKS, text), "ascii": _next_break(_ASCII_BREAKS, text),
             "line": _next_break(_LINE_BREAKS, text)}
    tokens, pos = [], 0
    while pos < n:
        if ord(text[pos]) > 0xFFFF:  # two surrogates in Java, both untokenizable
            pos += 1
            continue
        ends = {name: table[pos + 1] if pos + 1 < n else n for name, table in nexts.items()}
        ends.update({name: min(n, pos + width) for name, width in _FIXED_WINDOW.items()})
        ends["greedy"] = n
        best, chosen = (0, 0), None
        for rule in rules:
            total, stop = _match(rule, text, pos, ends[rule.window])
            if total > best[0]:
                best, chosen = (total, stop), rule
        token, consumed = _act(chosen.action, text[pos:best[1]])
        if token is not None:
            tokens.append(token)
        pos += consumed
    return tokens


def ptb_tokenize_lines(captions: Sequence[str]) -> list[str]:
    """Each caption as pycocoevalcap's ``PTBTokenizer.tokenize`` gives it: lower-cased PTB tokens joined
    by single spaces, :data:`PUNCTUATIONS` removed. The captions are lexed together, in order, as one
    newline-joined text (as pycocoevalcap feeds them to Java), so pass them in the order it would."""
    text = "\n".join(_OTHER_NEWLINES.sub(" ", c.replace("\n", " ")) for c in captions)
    lines, current = [], []
    for token in ptb_tokens(text):
        if token == NEWLINE_TOKEN:
            lines.append(current)
            current = []
        else:
            current.append(token.lower())
    lines.append(current)
    out = []
    for words in lines[:len(captions)]:
        line = " ".join(words).rstrip()
        out.append(" ".join(w for w in line.split(" ") if w not in PUNCTUATIONS))
    return out
