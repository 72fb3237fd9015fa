"""Request targets (HTTP, RTSP) as a camera's web server reads them, not as they were spelled.

The exploit matchers (``monitor/rules/exploit.py``) and the HTTP analyzer's login reading (the Dahua
``/RPC2_Login``, ``monitor/analyzers/http.py``) route a request by the path and parameters the server acts
on: an absolute-form target reduced to its path, the path percent-decoded once and normalised, the query's
names and values decoded once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

__all__ = ["normal_path", "percent_decoded", "query_params", "split_target"]

# An absolute-form request target (RFC 9112 3.2.2, which servers MUST accept): scheme "://" authority,
# the authority running to the path, query or fragment (RFC 3986 3.2).
_ABSOLUTE_FORM_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/?#]*")
_PERCENT_RE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
# Query parameters are separated by '&', and by ';' on servers following HTML 4's advice (B.2.2).
_PARAM_SEP_RE: Final = re.compile(r"[&;]")


def split_target(target: str) -> tuple[str, str]:
    """The raw path and query of a request target; an absolute-form target is reduced to its path (the
    host it names is the device: RFC 9112 3.2.2), the fragment (never sent by a browser) dropped."""
    absolute = _ABSOLUTE_FORM_RE.match(target)
    if absolute is not None:
        target = target[absolute.end() :]
    path, _, query = target.partition("#")[0].partition("?")
    return path or "/", query


def percent_decoded(text: str) -> str:
    """``text`` percent-decoded once (RFC 3986 2.1), each octet kept as the latin-1 character the
    analyzer made of the target's bytes; a '%' not followed by two hex digits stays."""
    if "%" not in text:
        return text
    return _PERCENT_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


def normal_path(target: str) -> str:
    """The path a camera's web server routes ``target`` to (case kept; matchers compare lowercased).

    Each step is one a server of this class takes; a matcher then asks the exploit's own condition
    (shell syntax in the body, a login bypass), so a path read more widely than one server would is no
    false positive on its own:

    - percent-decoded once, every octet (GoAhead's ``websValidateUriPath`` decodes the whole path before
      normalising it, ``%2F`` included; RFC 3986 6.2.2.2 alone would decode only unreserved characters,
      which this covers). Only once: a server decodes once, so ``%2561`` is ``%61``, not ``a`` (no
      camera firmware is known to us to decode twice);
    - cut at a decoded NUL: a C server's string ends there (GoAhead refuses to decode ``%00``);
    - ``;params`` dropped from each segment (RFC 3986 3.3 path parameters: servlet-style servers strip
      them, so ``/SDK/webLanguage;x`` and ``/..;/`` route as ``/SDK/webLanguage`` and ``/../``). They
      strip before decoding; here it is after, so ``%3B`` counts too: a superset, harmless for the same
      reason as above;
    - empty segments dropped: repeated and trailing slashes collapse (GoAhead's
      ``websNormalizeUriPath``, and most embedded servers map the path to a file or a prefix route);
    - ``.`` and ``..`` resolved (RFC 3986 5.2.4; ``..`` never climbs above the root). The slashes are
      collapsed first, as GoAhead does: ``/a//../b`` is ``/b`` there, ``/a/b`` by the RFC alone.
    """
    path = percent_decoded(split_target(target)[0]).partition("\x00")[0]
    segments: list[str] = []
    for raw in path.split("/"):
        segment = raw.partition(";")[0]
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


def query_params(target: str) -> Iterator[tuple[str, str]]:
    """The (name, value) pairs a server's form parser reads from ``target``: split on ``&`` and ``;``
    and at the first ``=``, then each name and value percent-decoded once (GoAhead's ``addFormVars``
    order: an encoded ``%26`` or ``%3D`` is data, never a separator). ``+`` stays ``+``: a form
    decoder's space would spoil a Base64 token, and the raw reading is the one that matches. The last
    path segment's ``;name=value`` parameters are read too (they were matched before normalisation)."""
    path, query = split_target(target)
    pieces = _PARAM_SEP_RE.split(query) if query else []
    last = path.rpartition("/")[2]
    if ";" in last:
        pieces += last.split(";")[1:]
    for piece in pieces:
        name, eq, value = piece.partition("=")
        if eq:
            yield percent_decoded(name), percent_decoded(value)
