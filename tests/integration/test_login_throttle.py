"""Logins and signups throttled per account and per client address, behind a proxy that appends to
X-Forwarded-For (CHAT_TRUSTED_PROXIES=1, as behind the bundled nginx), on an instance of its own:
its limits are low and its counters (its own Redis prefix) are no other test's."""

import re
import secrets

import httpx
import pytest
from django.contrib.auth import get_user_model

from tests.conftest import RUN, child_env
from tests.support import WebServer, unique

TOO_MANY = "Too many attempts; try again in"


@pytest.fixture(scope="module")
def web():
    server = WebServer(f"web-throttle-{RUN}", child_env(
        CHAT_LOGIN_LIMIT="3/15m", CHAT_LOGIN_ADDRESS_LIMIT="6/15m", CHAT_SIGNUP_LIMIT="3/1h",
        CHAT_TRUSTED_PROXIES="1", CHAT_REDIS_PREFIX=f"chat-test-throttle-{RUN}")).start()
    yield server
    server.stop()


def address() -> str:
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"


def user_with_password(prefix: str, **extra):
    password = "pw-" + secrets.token_hex(8)
    user = get_user_model().objects.create_user(username=unique(prefix), password=password, **extra)
    return user, password


def post_form(server, path: str, data: dict, *, client_address: str, spoofed: str | None = None) -> httpx.Response:
    """GET the form, POST it from `client_address` as the proxy reports it (after what the client
    itself wrote into X-Forwarded-For, when `spoofed`)."""
    forwarded = {"X-Forwarded-For": f"{spoofed}, {client_address}" if spoofed else client_address}
    with httpx.Client(base_url=server.url, timeout=10, headers=forwarded) as client:
        page = client.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = client.post(path, data={**data, "csrfmiddlewaretoken": token})
        response.logged_in = client.get("/").status_code == 200
        return response


def login(server, username: str, password: str, client_address: str, path: str = "/accounts/login/"):
    return post_form(server, path, {"username": username, "password": password}, client_address=client_address)


def test_wrong_passwords_lock_the_account_whatever_the_address_until_the_window_ends(web):
    user, password = user_with_password("target")
    for _ in range(3):  # each guess from another address: the account's count still grows
        guess = login(web, user.username, "wrong-" + secrets.token_hex(4), address())
        assert guess.status_code == 200 and "do not match" in guess.text
    refused = login(web, user.username, password, address())
    assert refused.status_code == 429 and not refused.logged_in
    assert f"{TOO_MANY} 15 minutes." in refused.text and 'role="alert"' in refused.text

    other, other_password = user_with_password("neighbour")  # other accounts are not locked
    assert login(web, other.username, other_password, address()).status_code == 302


def test_the_admin_login_is_locked_with_the_account(web):
    staff, password = user_with_password("staff", is_staff=True)
    for _ in range(3):
        login(web, staff.username, "wrong", address(), path="/admin/login/")
    refused = login(web, staff.username, password, address(), path="/admin/login/")
    assert TOO_MANY in refused.text and not refused.logged_in


def test_failed_logins_from_one_address_lock_that_address_and_a_success_resets_only_the_account(web):
    here, elsewhere = address(), address()
    user, password = user_with_password("owner")
    login(web, user.username, "wrong", here)
    assert login(web, user.username, password, here).status_code == 302  # forgets the account's failure...
    for n in range(5):  # ...but not the address's: 1 + 5 = 6 failures from here, each on another account
        assert login(web, unique(f"guess{n}"), "wrong", here).status_code == 200
    refused = login(web, user.username, password, here)
    assert refused.status_code == 429 and TOO_MANY in refused.text
    assert login(web, user.username, password, elsewhere).status_code == 302


def test_many_signups_from_one_address_are_throttled_whatever_the_client_writes_in_x_forwarded_for(web):
    here = address()

    def signup(client_address: str, spoofed: str | None = None) -> httpx.Response:
        password = "a-long-passphrase-" + secrets.token_hex(4)
        return post_form(web, "/accounts/signup/", {"username": unique("new"), "password1": password,
                                                    "password2": password},
                         client_address=client_address, spoofed=spoofed)

    for _ in range(3):
        created = signup(here, spoofed=address())  # a made-up address in front changes nothing
        assert created.status_code == 302 and created.logged_in
    refused = signup(here, spoofed=address())
    assert refused.status_code == 429 and not refused.logged_in
    assert f"{TOO_MANY} 60 minutes." in refused.text and 'role="alert"' in refused.text
    assert signup(address()).status_code == 302  # another address signs up
