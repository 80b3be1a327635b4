"""Accounts in the store itself, on both backends: what the CLI refuses, the store refuses too."""

from __future__ import annotations

import pytest

from calltrack.errors import AdminError
from calltrack.store import Store


@pytest.mark.parametrize("name", ["", " ", "\t\n"], ids=["empty", "space", "whitespace"])
def test_a_blank_account_name_is_refused_and_nothing_is_stored(store: Store, name: str) -> None:
    with pytest.raises(AdminError, match=r"^the account name is empty$"):
        store.create_account(name)
    assert store.list_accounts() == []


def test_a_name_with_spaces_around_it_is_kept_as_given(store: Store) -> None:
    created = store.create_account(" acme ")
    assert store.find_account(" acme ") == created
    assert [account.name for account in store.list_accounts()] == [" acme "]
