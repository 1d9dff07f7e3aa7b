"""Password reset by email: Django's own views, the request throttled per email and per client
address like logins (chat.attempts), so the form cannot be used to flood a mailbox."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse

from chat.attempts import attempt_key, attempts
from chat.services import accounts


def password_reset_wait(*, email: str, address: str) -> float:
    """Count one reset request for `email` from `address`: the seconds to wait when it is one too
    many for either, else 0. Like the login throttle it fails open when Redis is away."""
    wait = 0.0
    for kind, value, spec in (("reset-email", email.strip().lower(), settings.CHAT_PASSWORD_RESET_LIMIT),
                              ("reset-address", address, settings.CHAT_PASSWORD_RESET_ADDRESS_LIMIT)):
        limit = accounts._limit(spec)
        if limit is not None:
            count, left = accounts._safely(attempts().add, attempt_key(kind, value), limit[1], default=(0, 0.0))
            if count > limit[0]:
                wait = max(wait, left)
    return wait


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset form; past the throttle it answers 429 and sends nothing."""

    def form_valid(self, form) -> HttpResponse:
        request: HttpRequest = self.request
        wait = password_reset_wait(email=form.cleaned_data["email"], address=accounts.client_address(request))
        if wait:
            return self.render_to_response(self.get_context_data(form=form,
                                                                 throttle_message=accounts.throttle_message(wait)),
                                           status=429)
        return super().form_valid(form)
