"""Password reset by email (issue 22) with Django's own views: the web instance mails the link
through the console backend (EMAIL_URL unset), so the test reads it from the instance's output,
follows it, sets a new password and logs in with it; requests are throttled like logins."""

import re
import secrets

import httpx

from tests.conftest import make_room, make_user, session_cookie
from tests.support import chat_socket, unique, wait_until


def anonymous(server) -> httpx.Client:
    """A browser without a session whose form posts pass the CSRF check (cookie and header agree)."""
    token = secrets.token_hex(16)
    return httpx.Client(base_url=server.url, timeout=10, cookies={"csrftoken": token},
                        headers={"X-CSRFToken": token})


def mails_to(server, user) -> list[str]:
    """The reset links mailed to `user` so far, from the instance's console mail output."""
    return re.findall(rf"Hello {re.escape(user.username)},.*?(http://\S+/accounts/reset/\S+/)", server.log(), re.S)


async def test_a_forgotten_password_is_reset_through_the_mailed_link(web_a, web_b):
    user = make_user("forgot", email=f"{unique('forgot')}@example.com")
    room = make_room(user)
    async with chat_socket(web_b, room.slug, session_cookie(user)) as old_session:
        new = _reset_through_the_mail(web_a, user)
        assert await old_session.close_code() == 4401  # signed with the old password: ended

    with anonymous(web_a) as browser:
        logged_in = browser.post("/accounts/login/", data={"username": user.username, "password": new})
        assert logged_in.status_code == 302 and logged_in.headers["location"] == "/"
        assert "sessionid" in logged_in.cookies


def _reset_through_the_mail(web_a, user) -> str:
    """Ask for the link, follow it from the mail, set a new password; the new password."""
    with anonymous(web_a) as browser:
        login_page = browser.get("/accounts/login/")
        assert 'href="/accounts/password_reset/"' in login_page.text and "Forgot password?" in login_page.text
        assert browser.get("/accounts/password_reset/").status_code == 200
        asked = browser.post("/accounts/password_reset/", data={"email": user.email.upper()})
        assert asked.status_code == 302 and asked.headers["location"] == "/accounts/password_reset/done/"
        assert "Check your email" in browser.get(asked.headers["location"]).text

        link = wait_until(lambda: mails_to(web_a, user), message="the reset mail in the instance's output")[0]
        assert link.startswith(web_a.url)
        form = browser.get(link.removeprefix(web_a.url), follow_redirects=True)
        assert form.status_code == 200 and "Choose a new password" in form.text, form.text[:500]
        new = "pw-" + secrets.token_hex(8)
        done = browser.post(str(form.url), data={"new_password1": new, "new_password2": new})
        assert done.status_code == 302 and done.headers["location"] == "/accounts/reset/done/", done.text[:500]
        assert "Password changed" in browser.get("/accounts/reset/done/").text
        again = browser.get(link.removeprefix(web_a.url), follow_redirects=True)  # a link works once
        assert "does not work any more" in again.text
    return new


def test_an_unknown_address_looks_the_same_and_no_mail_goes_out(web_a):
    with anonymous(web_a) as browser:
        asked = browser.post("/accounts/password_reset/", data={"email": f"{unique('nobody')}@example.com"})
        assert asked.status_code == 302 and asked.headers["location"] == "/accounts/password_reset/done/"


def test_reset_requests_are_throttled_per_email_address(web_a):
    user = make_user("flooded", email=f"{unique('flooded')}@example.com")
    with anonymous(web_a) as browser:
        for _ in range(3):  # CHAT_PASSWORD_RESET_LIMIT: 3/1h by default
            assert browser.post("/accounts/password_reset/", data={"email": user.email}).status_code == 302
        wait_until(lambda: len(mails_to(web_a, user)) == 3, message="three reset mails")
        refused = browser.post("/accounts/password_reset/", data={"email": user.email})
        assert refused.status_code == 429 and "Too many attempts" in refused.text
    assert len(mails_to(web_a, user)) == 3  # the refused request sent nothing
