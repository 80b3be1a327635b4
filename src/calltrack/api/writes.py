"""The ``call`` entity's write methods: ``put`` (import through the API) and ``delete``."""

from __future__ import annotations

from calltrack.api.answers import Answer
from calltrack.api.request import V3Request
from calltrack.errors import BadCallData, BodyTooLarge, ImportRejected
from calltrack.importer import import_bytes
from calltrack.render.json import CONTENT_TYPE, envelope
from calltrack.store import Store


def put_calls(store: Store, account_id: int, body: bytes | None) -> Answer:
    """Import the body's calls into the account: the same rules as ``calltrack import``.

    ``body`` is None when it was larger than the limit and was not read.
    """
    if body is None:
        raise BodyTooLarge
    try:
        result = import_bytes(store, account_id, body, store.settings.zone, announce="put")
    except ImportRejected as exc:
        raise BadCallData(exc.line, exc.reason, exc.index) from None
    inbound = {"result": "ok", "imported": result.imported, "updated": result.updated}
    return Answer(envelope(inbound), CONTENT_TYPE)


def delete_call(store: Store, account_id: int, request: V3Request) -> Answer:
    """Delete one of the account's own calls; deleting an absent call is not an error."""
    deleted = store.delete_call(account_id, request.call_id)
    return Answer(envelope({"result": "ok", "deleted": deleted}), CONTENT_TYPE)
