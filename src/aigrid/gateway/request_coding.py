"""A request body is read as it is sent: the gateway inflates no request (`Content-Encoding`), and one that says it
is compressed is refused before a byte of its body is read (every body's reader: routes.receive_body, the Files
API's upload).

Until the thirty-sixth session the header was not read: a JSON body labelled `gzip` was served as plain and a gzip
body was the client's `invalid_json`. A proxy or a web application firewall in front of the gateway that inflates
by the label (or gives up on a body it cannot inflate, and passes it unread) judged another body than the one the
gateway served: the request's own words about its body must mean one thing on the whole path. Inflating here instead
would be a compression bomb's door (64 KiB of gzip is 66 MB) for no client that needs it: the OpenAI and Anthropic
SDKs send their bodies uncompressed (ATK4)."""

from __future__ import annotations

from starlette.datastructures import Headers

from aigrid.content_coding import IDENTITY
from aigrid.errors import InvalidRequest

HEADER = "content-encoding"


def check_plain(headers: Headers) -> None:
    """Refuse a body whose `Content-Encoding` headers (every one of them, as sent: a proxy may read the first or
    the last) name a coding other than identity: 400 `unsupported_content_encoding`, naming the header."""
    codings = headers.getlist(HEADER)
    named = [c.strip().lower() for value in codings for c in value.split(",")]
    if any(c not in ("", IDENTITY) for c in named):
        said = ", ".join(codings)
        raise InvalidRequest(f"{HEADER} {said!r}: this gateway reads request bodies as sent, uncompressed; send the "
                             "body without Content-Encoding (or as identity)", param=HEADER,
                             code="unsupported_content_encoding")
