"""The SQL store: tables, migrations and every query resq runs (SQL lives nowhere else).

One query style: every query is a method of a small per-concept class, all of them sharing
one engine through their base ``engine.Queries``, each method opening its own short session:

- ``responses.ResponseStore``: creating a response (with its ``Idempotency-Key``), reading,
  rendering, deleting it
- ``items.ItemStore``: its items, ``previous_response_id`` chains, input-item pages, output
  items written as a run goes
- ``jobs.JobStore``: a run's claim, finish and cancel, and the reaper's queries
- ``conversations.ConversationStore``, ``webhooks.WebhookStore``, ``admin.AdminStore``

``Store`` (``repo.py``) is the first three in one object, built from the engine: the API and
the worker hold it. The others are built over it (``WebhookStore(store)``) and share its
engine. A step that must run inside another query's transaction (the webhook outbox, a
conversation's new items, deleting a response's rows) is a module function taking that
transaction's session, called only by the store.
"""

from shared.store.engine import make_engine
from shared.store.items import ChainBroken
from shared.store.repo import Store
from shared.store.responses import IdempotencyKey

__all__ = ["ChainBroken", "IdempotencyKey", "Store", "make_engine"]
