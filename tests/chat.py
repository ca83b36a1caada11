"""A team chat for tests: an in-process inbox on loopback and the notification block that
posts to it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.types import SecretDict

from deliver.sandbox.services.chat_inbox import Inbox


@contextlib.contextmanager
def chat_block(name: str, token: str) -> Iterator[Inbox]:
    """Serve an inbox and save `custom-webhook/<name>` pointing at it, with `token` secret."""
    box = Inbox(token)
    server = box.serve(0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    CustomWebhookNotificationBlock(
        name=name,
        url=f"http://127.0.0.1:{server.server_address[1]}/hooks/{{{{token}}}}",
        json_data={"text": "*{{subject}}*\n{{body}}"},
        secrets=SecretDict({"token": token}),
        headers=None,
        cookies=None,
    ).save(name, overwrite=True)
    try:
        yield box
    finally:
        server.shutdown()
