"""The account settings page: the user's data as a JSON download, and deleting the account (the
password asked again, and counted like a login's). Thin: the work is chat.services.export and
chat.services.erasure."""

import logging

from django import forms
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from chat import selectors
from chat.errors import ChatError
from chat.services import accounts, erasure
from chat.services.export import user_export_response

logger = logging.getLogger(__name__)


class AccountDeleteForm(forms.Form):
    password = forms.CharField(label="Your password", strip=False,
                               widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))


def _page(request: HttpRequest, form: AccountDeleteForm, *, status: int = 200, **extra) -> HttpResponse:
    return render(request, "chat/settings.html", {
        "form": form, "messages_kept": erasure.deletion_mode() == "keep",
        "standing": "banned" if selectors.user_is_banned(request.user) else "", **extra}, status=status)


@login_required
@require_GET
def account_settings(request: HttpRequest) -> HttpResponse:
    return _page(request, AccountDeleteForm())


@login_required
@require_GET
def account_export(request: HttpRequest) -> StreamingHttpResponse:
    return user_export_response(user=request.user)


@login_required
@require_POST
def account_delete(request: HttpRequest) -> HttpResponse:
    form = AccountDeleteForm(request.POST)
    username, address = request.user.get_username(), accounts.client_address(request)
    if wait := accounts.login_wait(username=username, address=address):
        return _page(request, form, status=429, throttle_message=accounts.throttle_message(wait))
    if not form.is_valid() or not request.user.check_password(form.cleaned_data["password"]):
        accounts.login_failure_record(username=username, address=address)
        if form.is_valid():
            form.add_error("password", "That is not your password.")
        return _page(request, form, status=400)
    try:
        erasure.user_delete(user=request.user, actor=request.user)
        unfinished = False
    except ChatError:  # closed all the same: logged, and `manage.py delete_user` finishes it
        logger.exception("account %s closed, but its deletion did not finish", request.user.pk)
        unfinished = True
    request.session.flush()  # deleted with the account already; this browser gets a fresh one
    request.user = AnonymousUser()
    return render(request, "chat/settings.html", {"deleted": True, "unfinished": unfinished},
                  status=503 if unfinished else 200)
