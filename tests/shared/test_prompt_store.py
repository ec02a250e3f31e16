"""Prompts in the store, on SQLite and Postgres: names unique per tenant, versions numbered
from 1 and never rewritten, concurrent saves each getting their own number, paging, and a
delete taking every version with it."""

from __future__ import annotations

import threading

import pytest

from shared.store import Store
from shared.store.prompts import NameTaken, PromptStore
from shared.store.tables import PromptRow

T0 = 1_800_000_000


def prompt(pid: str, name: str, tenant: str = "t", created_at: int = T0) -> PromptRow:
    return PromptRow(
        id=pid,
        tenant=tenant,
        name=name,
        meta={},
        default_version=1,
        latest_version=1,
        created_at=created_at,
        updated_at=created_at,
    )


def test_create_and_read_back(store: Store) -> None:
    prompts = PromptStore(store)
    prompts.create(prompt("pmpt_1", "greeter"), {"instructions": "Hi {{ name }}"})
    assert prompts.get(tenant="t", prompt_id="pmpt_1") is not None
    assert prompts.get(tenant="other", prompt_id="pmpt_1") is None
    found = prompts.by_name(tenant="t", name="greeter")
    assert found is not None and found.id == "pmpt_1"
    first = prompts.version(prompt_id="pmpt_1", version=1)
    assert first is not None and first.body == {"instructions": "Hi {{ name }}"}


def test_names_are_unique_per_tenant(store: Store) -> None:
    prompts = PromptStore(store)
    prompts.create(prompt("pmpt_1", "greeter"), {})
    with pytest.raises(NameTaken):
        prompts.create(prompt("pmpt_2", "greeter"), {})
    prompts.create(prompt("pmpt_3", "greeter", tenant="other"), {})
    prompts.create(prompt("pmpt_4", "farewell"), {})
    with pytest.raises(NameTaken):
        prompts.update(tenant="t", prompt_id="pmpt_4", changes={"name": "greeter"}, now=T0)
    assert prompts.get(tenant="t", prompt_id="pmpt_4").name == "farewell"  # type: ignore[union-attr]


def test_versions_are_numbered_and_immutable(store: Store) -> None:
    prompts = PromptStore(store)
    prompts.create(prompt("pmpt_1", "p"), {"v": 1})
    two = prompts.add_version(tenant="t", prompt_id="pmpt_1", body={"v": 2}, now=T0 + 1)
    three = prompts.add_version(tenant="t", prompt_id="pmpt_1", body={"v": 3}, now=T0 + 2)
    assert (two and two.version, three and three.version) == (2, 3)
    assert prompts.add_version(tenant="other", prompt_id="pmpt_1", body={}, now=T0) is None
    row = prompts.get(tenant="t", prompt_id="pmpt_1")
    assert row is not None and (row.latest_version, row.default_version) == (3, 1)
    first = prompts.version(prompt_id="pmpt_1", version=1)
    assert first is not None and first.body == {"v": 1}
    page = prompts.versions(prompt_id="pmpt_1", limit=2)
    assert [v["version"] for v in page.items] == [3, 2] and page.has_more
    rest = prompts.versions(prompt_id="pmpt_1", limit=2, after=2)
    assert [v["version"] for v in rest.items] == [1] and not rest.has_more
    up = prompts.versions(prompt_id="pmpt_1", limit=5, order="asc")
    assert [v["version"] for v in up.items] == [1, 2, 3]


def test_concurrent_saves_each_get_a_number(store: Store) -> None:
    prompts = PromptStore(store)
    prompts.create(prompt("pmpt_1", "p"), {})
    numbers: list[int] = []
    errors: list[BaseException] = []

    def save(n: int) -> None:
        try:
            saved = prompts.add_version(tenant="t", prompt_id="pmpt_1", body={"n": n}, now=T0)
            assert saved is not None
            numbers.append(saved.version)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(numbers) == [2, 3, 4, 5, 6, 7]


def test_list_pages_by_creation_and_delete_takes_the_versions(store: Store) -> None:
    prompts = PromptStore(store)
    for i in range(5):
        prompts.create(prompt(f"pmpt_{i}", f"p{i}", created_at=T0 + i), {})
    prompts.create(prompt("pmpt_x", "x", tenant="other"), {})
    page = prompts.list(tenant="t", limit=2)
    assert page is not None and [p["id"] for p in page.items] == ["pmpt_4", "pmpt_3"]
    nxt = prompts.list(tenant="t", limit=10, after="pmpt_3")
    assert nxt is not None and [p["id"] for p in nxt.items] == ["pmpt_2", "pmpt_1", "pmpt_0"]
    assert prompts.list(tenant="t", limit=2, after="pmpt_x") is None
    prompts.add_version(tenant="t", prompt_id="pmpt_0", body={}, now=T0)
    assert prompts.delete(tenant="other", prompt_id="pmpt_0") is False
    assert prompts.delete(tenant="t", prompt_id="pmpt_0") is True
    assert prompts.version(prompt_id="pmpt_0", version=2) is None
    assert prompts.get(tenant="t", prompt_id="pmpt_0") is None
