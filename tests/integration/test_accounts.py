"""Accounts (contract §2) over real HTTP against a daphne instance: signup, login, logout, pages."""

import os
import re
import subprocess

import httpx
from django.contrib.auth import get_user_model

from tests.conftest import child_env
from tests.support import PYTHON, ROOT, unique


def csrf_from(page: str) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def test_signup_logs_in_and_redirects_home_then_logout_and_login(web_a):
    username, password = unique("carol"), "a-long-passphrase-" + unique("pw")
    with httpx.Client(base_url=web_a.url) as client:
        form = client.get("/accounts/signup/")
        assert form.status_code == 200 and 'name="password2"' in form.text
        created = client.post("/accounts/signup/", data={"username": username, "password1": password,
                                                         "password2": password,
                                                         "csrfmiddlewaretoken": csrf_from(form.text)})
        assert created.status_code == 302 and created.headers["location"] == "/"
        home = client.get("/")
        assert home.status_code == 200 and username in home.text

        logout = client.post("/accounts/logout/", data={"csrfmiddlewaretoken": csrf_from(home.text)})
        assert logout.status_code == 302
        assert client.get("/").status_code == 302  # the room list needs a login again

        login_form = client.get("/accounts/login/")
        logged_in = client.post("/accounts/login/", data={"username": username, "password": password,
                                                          "csrfmiddlewaretoken": csrf_from(login_form.text)})
        assert logged_in.status_code == 302 and logged_in.headers["location"] == "/"
        assert username in client.get("/").text


def test_signup_takes_an_optional_email_for_password_resets(web_a):
    from django.contrib.auth import get_user_model

    username, password = unique("erin"), "a-long-passphrase-" + unique("pw")
    with httpx.Client(base_url=web_a.url) as client:
        form = client.get("/accounts/signup/")
        assert 'name="email"' in form.text
        created = client.post("/accounts/signup/", data={"username": username, "email": f"{username}@example.com",
                                                         "password1": password, "password2": password,
                                                         "csrfmiddlewaretoken": csrf_from(form.text)})
        assert created.status_code == 302
    assert get_user_model().objects.get(username=username).email == f"{username}@example.com"


def test_signup_errors_are_shown_on_the_form(web_a):
    with httpx.Client(base_url=web_a.url) as client:
        form = client.get("/accounts/signup/")
        page = client.post("/accounts/signup/", data={"username": unique("dave"), "password1": "one-password-x1",
                                                      "password2": "another-password",
                                                      "csrfmiddlewaretoken": csrf_from(form.text)})
        assert page.status_code == 200
        assert "password fields didn" in page.text.replace("&#x27;", "'")
        bad_login = client.post("/accounts/login/", data={"username": "nobody-" + unique("x"), "password": "x",
                                                          "csrfmiddlewaretoken": csrf_from(form.text)})
        assert bad_login.status_code == 200 and 'role="alert"' in bad_login.text
        # The names deleted accounts' messages show under are not for taking.
        password = "a-long-passphrase-9"
        impostor = client.post("/accounts/signup/", data={
            "username": "Deleted-" + unique("x")[-8:], "password1": password, "password2": password,
            "csrfmiddlewaretoken": csrf_from(form.text)})
        assert impostor.status_code == 200 and "kept for deleted accounts" in impostor.text


def test_room_page_names_its_parts_for_assistive_technology(web_a, alice, room):
    page = httpx.get(f"{web_a.url}/rooms/{room.slug}/", cookies={"sessionid": alice.cookie})
    assert page.status_code == 200
    assert 'role="log" aria-label="Messages"' in page.text
    assert '<label for="message-input"' in page.text and ">Message</label>" in page.text
    assert 'aria-label="Online"' in page.text and 'role="status"' in page.text
    assert httpx.get(f"{web_a.url}/rooms/no-such-room/", cookies={"sessionid": alice.cookie}).status_code == 404


def test_createsuperuser_noinput_from_the_environment():
    username = unique("admin")
    env = child_env(DJANGO_SUPERUSER_USERNAME=username, DJANGO_SUPERUSER_PASSWORD="pw-" + unique("x"),
                    DJANGO_SUPERUSER_EMAIL="admin@example.com")
    done = subprocess.run([PYTHON, "manage.py", "createsuperuser", "--noinput"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert get_user_model().objects.get(username=username).is_superuser
    assert os.environ["DATABASE_URL"] == env["DATABASE_URL"]


def test_no_debug_pages_in_production(web_a, alice):
    missing = httpx.get(f"{web_a.url}/no/such/page/", cookies={"sessionid": alice.cookie})
    assert missing.status_code == 404
    assert "Traceback" not in missing.text and "URLconf" not in missing.text
    framed = httpx.get(f"{web_a.url}/accounts/login/")
    assert framed.headers["x-frame-options"] == "DENY" and framed.headers["x-content-type-options"] == "nosniff"
