"""Moderation actions that ask first, as Django's delete confirmation does: a page naming who or what
is acted on, with an optional reason for the moderation log; its POST runs the action through the
moderation services. Used by list actions (the selection is carried in hidden fields) and by the
buttons on a user's or a report's page."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.utils import timezone

from chat.services import moderation


class ReasonForm(forms.Form):
    reason = forms.CharField(required=False, max_length=500, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
                             help_text="Optional. Kept in the moderation log with who did it and when.")


@dataclass(frozen=True)
class UserAction:
    label: str  # the button: "Ban"
    done: str  # the confirmation: "Banned"
    effect: str  # what happens, in plain words
    apply: Callable[..., None]  # (actor=, user=, reason=)


def _mute_for(hours: int | None) -> Callable[..., None]:
    def apply(*, actor, user, reason: str) -> None:
        until = timezone.now() + timedelta(hours=hours) if hours else None
        moderation.user_mute(actor=actor, user=user, until=until, reason=reason)

    return apply


USER_ACTIONS: dict[str, UserAction] = {
    "ban": UserAction("Ban", "Banned",
                      "Their open connections close now on every instance, and they cannot reconnect or use the "
                      "API until unbanned.", moderation.user_ban),
    "unban": UserAction("Unban", "Unbanned", "They can connect and post again.", moderation.user_unban),
    "mute_hour": UserAction("Mute for 1 hour", "Muted for 1 hour",
                            "They keep reading, but every message they send is refused for the next hour.",
                            _mute_for(1)),
    "mute_day": UserAction("Mute for 24 hours", "Muted for 24 hours",
                           "They keep reading, but every message they send is refused for the next 24 hours.",
                           _mute_for(24)),
    "mute": UserAction("Mute until lifted", "Muted until lifted",
                       "They keep reading, but every message they send is refused until someone unmutes them.",
                       _mute_for(None)),
    "unmute": UserAction("Unmute", "Unmuted", "They can send messages again.", moderation.user_unmute),
}


def confirmation(model_admin: admin.ModelAdmin, request, *, title: str, effect: str, targets: list[str],
                 apply: Callable[[str], None], done: str, carry: dict | None = None) -> TemplateResponse | None:
    """The confirmation page for an action on `targets`, or, on its POST, the action applied (None)."""
    form = ReasonForm(request.POST if request.POST.get("confirm") == "yes" else None)
    if form.is_bound and form.is_valid():
        apply(form.cleaned_data["reason"])
        model_admin.message_user(request, done, messages.SUCCESS)
        return None
    context = {
        **model_admin.admin_site.each_context(request),
        "title": f"{title}?", "effect": effect, "targets": targets, "form": form, "button": title,
        "carry": carry or {}, "opts": model_admin.model._meta,
    }
    return TemplateResponse(request, "admin/chat/moderation_confirmation.html", context)


def user_action(model_admin: admin.ModelAdmin, request, *, kind: str, users: list,
                carry: dict | None = None) -> TemplateResponse | None:
    action = USER_ACTIONS[kind]

    def apply(reason: str) -> None:
        for user in users:
            action.apply(actor=request.user, user=user, reason=reason)

    names = [user.get_username() for user in users]
    return confirmation(model_admin, request, title=action.label, effect=action.effect, targets=names, apply=apply,
                        done=f"{action.done}: {', '.join(names)}.", carry=carry)


def _list_action(kind: str, name: str) -> Callable:
    @admin.action(description=USER_ACTIONS[kind].label, permissions=["moderate"])
    def run(model_admin, request, queryset):
        users = model_admin.moderation_users(queryset)
        carry = {"action": name, "_selected_action": [str(pk) for pk in queryset.values_list("pk", flat=True)]}
        return user_action(model_admin, request, kind=kind, users=users, carry=carry)

    run.__name__ = name
    return run


class UserModerationActions:
    """Ban, unban, mute and unmute, from a list, for the users its selection stands for
    (`moderation_users`). They need `chat.change_chatprofile`."""

    user_actions = ["ban", "unban", "mute_hour", "mute_day", "mute_until_lifted", "unmute"]

    ban = _list_action("ban", "ban")
    unban = _list_action("unban", "unban")
    mute_hour = _list_action("mute_hour", "mute_hour")
    mute_day = _list_action("mute_day", "mute_day")
    mute_until_lifted = _list_action("mute", "mute_until_lifted")
    unmute = _list_action("unmute", "unmute")

    def moderation_users(self, queryset) -> list:
        raise NotImplementedError

    def has_moderate_permission(self, request) -> bool:
        return request.user.has_perm("chat.change_chatprofile")
