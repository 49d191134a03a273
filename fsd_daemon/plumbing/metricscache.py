"""/metrics from bytes rendered once per change of what they show, not once per scrape.

A registry whose collectors only read immutable snapshots renders the same bytes until a
snapshot is replaced. :class:`RenderedMetrics` renders when its owner says the data changed
(:meth:`RenderedMetrics.refresh`, called by the thread that published the new snapshot), in
every form a scrape has asked for (text or OpenMetrics, gzipped or not), so a scrape is a
lookup: on a node whose CPUs are busy with training, a scrape then costs what serving a static
file costs.

Invariant: a scrape never serves bytes rendered from older data than it would have rendered
itself. The cache is keyed by the identity of the data objects (``version()``); a scrape that
finds the key changed since the last render (a publisher that has not called ``refresh`` yet)
renders on the spot, exactly as prometheus_client's own WSGI app would.
"""

from __future__ import annotations

import gzip
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder, gzip_accepted

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
# The objects a render reads; compared by identity (immutable snapshots replaced whole).
Version = Callable[[], tuple[object, ...]]

# Forms kept rendered: text and OpenMetrics, each plain and gzipped. The content type comes
# from the client's Accept header (its version and escaping parameters), so the set is bounded
# here, oldest asked dropped first, not by what clients send.
MAX_FORMS = 4


@dataclass(frozen=True, slots=True)
class _Form:
    content_type: str
    gzipped: bool


@dataclass(frozen=True, slots=True)
class _Rendered:
    version: tuple[object, ...]
    bodies: dict[_Form, bytes]


class RenderedMetrics:
    """A WSGI app for /metrics that serves cached renders of ``registry``.

    ``version()`` returns the data objects the registry's collectors read; :meth:`refresh`
    re-renders the forms scrapes have asked for when they changed. Requests the cache does not
    cover (not GET, ``name[]`` filters) go to prometheus_client's app unchanged.
    """

    def __init__(self, registry: CollectorRegistry, version: Version) -> None:
        self._registry = registry
        self._version = version
        self._fallback = make_wsgi_app(registry)
        self._lock = threading.Lock()  # one render at a time; readers never take it
        # Forms asked for (most recent last) -> the encoder that renders the uncompressed body.
        self._forms: OrderedDict[_Form, Callable[[CollectorRegistry], bytes]] = OrderedDict()
        self._rendered = _Rendered(version=(), bodies={})  # replaced whole

    def refresh(self) -> None:
        """Render every form asked for so far if the data changed. Called by publishers."""
        try:
            with self._lock:
                version = self._version()
                if not self._forms or _same(version, self._rendered.version):
                    return
                self._rendered = self._render(version, list(self._forms))
        except Exception:  # a publisher's thread must go on; the next scrape renders itself
            log.exception("rendering /metrics failed")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        query = environ.get("QUERY_STRING", "")
        if environ.get("REQUEST_METHOD") != "GET" or (query and "name[]" in parse_qs(query)):
            return self._fallback(environ, start_response)
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        form = _Form(content_type, gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")))
        body = self._body(form, encoder)
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if form.gzipped:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    def _body(self, form: _Form, encoder: Callable[[CollectorRegistry], bytes]) -> bytes:
        rendered = self._rendered
        version = self._version()
        if _same(version, rendered.version):
            body = rendered.bodies.get(form)
            if body is not None:
                return body
        with self._lock:
            self._forms[form] = encoder
            self._forms.move_to_end(form)
            while len(self._forms) > MAX_FORMS:
                self._forms.popitem(last=False)
            rendered = self._rendered
            version = self._version()
            if not _same(version, rendered.version):
                rendered = self._render(version, list(self._forms))
            elif form not in rendered.bodies:
                rendered = _Rendered(
                    version, {**rendered.bodies, **self._render(version, [form]).bodies}
                )
            self._rendered = rendered
            return rendered.bodies[form]

    def _render(self, version: tuple[object, ...], forms: list[_Form]) -> _Rendered:
        # Collectors read the same snapshots as ``version`` returned only if nothing is
        # published in between; one published meanwhile changes the version, so the next
        # refresh or scrape renders again: never older than the key says.
        plain: dict[str, bytes] = {}
        bodies: dict[_Form, bytes] = {}
        for form in forms:
            text = plain.get(form.content_type)
            if text is None:
                text = plain[form.content_type] = self._forms[form](self._registry)
            bodies[form] = gzip.compress(text) if form.gzipped else text
        return _Rendered(version, bodies)


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
