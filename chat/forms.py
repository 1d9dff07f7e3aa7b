"""The login forms (the site's and the admin's): each refuses, before any password is checked, while
the account or the client's address has had too many failed logins (services.accounts)."""

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError

from chat.services import accounts


class ThrottledLoginMixin:
    throttled_for = 0.0  # seconds until this login may be tried, when refused for that

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        self.throttled_for = accounts.login_wait(username=username, address=accounts.client_address(self.request))
        if self.throttled_for:
            raise ValidationError(accounts.throttle_message(self.throttled_for), code="throttled")
        return super().clean()


class LoginForm(ThrottledLoginMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledLoginMixin, AdminAuthenticationForm):
    pass


class SignupForm(UserCreationForm):
    """Django's signup with an optional email address: where a password reset link goes."""

    email = forms.EmailField(required=False, label="Email (optional: for resetting your password)")

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")

    def clean_username(self):
        from chat.services.erasure import STAND_IN_PREFIX

        username = super().clean_username()
        # Names of this form stand in for deleted accounts in history (chat.services.erasure).
        if username.lower().startswith(STAND_IN_PREFIX):
            raise ValidationError(f"Usernames starting with '{STAND_IN_PREFIX}' are kept for deleted accounts.",
                                  code="reserved")
        return username
