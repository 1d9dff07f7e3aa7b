"""Users and their chat standing in the admin. The user list and a user's page offer Ban, Unban,
Mute (1 hour, 24 hours, until lifted) and Unmute, each asking first with an optional reason; the
chat profile list keeps its one-click actions and its form. All go through the moderation services."""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone

from chat import permissions
from chat.admin.confirm import USER_ACTIONS, UserModerationActions, confirmation, user_action
from chat.errors import ChatError
from chat.models import ChatProfile, ModerationAction
from chat.services import erasure, moderation
from chat.services.export import user_export_response

User = get_user_model()


def standing(profile: ChatProfile | None, now=None) -> str:
    """A user's standing in plain words: "banned", "muted for 3 h 20 min", "muted until lifted", ""."""
    now = now or timezone.now()
    parts = []
    if permissions.is_banned(profile):
        parts.append("banned")
    if profile is not None and permissions.is_muted(profile.muted_until, now):
        parts.append("muted " + time_left(profile.muted_until, now))
    return ", ".join(parts)


def time_left(until, now=None) -> str:
    if until >= moderation.MUTED_INDEFINITELY:
        return "until lifted"
    minutes = max(1, int((until - (now or timezone.now())).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return "for " + (f"{hours} h {minutes} min" if hours else f"{minutes} min")


admin.site.unregister(User)


@admin.register(User)
class UserAdmin(UserModerationActions, DjangoUserAdmin):
    change_form_template = "admin/chat/user/change_form.html"
    list_display = [*DjangoUserAdmin.list_display, "chat_standing"]
    list_select_related = ["chat_profile"]
    actions = [*UserModerationActions.user_actions, "export_data", "delete_account"]

    def moderation_users(self, queryset) -> list:
        return list(queryset)

    @admin.display(description="chat standing")
    def chat_standing(self, user) -> str:
        profile = getattr(user, "chat_profile", None)
        if profile is not None and profile.deleted_account:
            return "deleted user (stand-in)"
        return standing(profile)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # it would skip the erasure: "Delete account" does it
        return actions

    def delete_model(self, request, obj) -> None:
        """The user page's Delete goes through the account deletion too (sockets, Kafka, the stand-in),
        once the admin's transaction commits: the workers must see each batch as it goes."""
        transaction.on_commit(lambda: erasure.user_delete(user=obj, actor=request.user))

    def delete_queryset(self, request, queryset) -> None:
        users = list(queryset)

        def delete_all() -> None:
            for user in users:
                erasure.user_delete(user=user, actor=request.user)

        transaction.on_commit(delete_all)

    @admin.action(description="Export data (JSON download)", permissions=["change"])
    def export_data(self, request, queryset):
        """One user's export, as they would download it; the download is in the moderation log (it
        holds their private messages)."""
        users = list(queryset[:2])
        if len(users) != 1:
            self.message_user(request, "Select exactly one user to export.", messages.WARNING)
            return None
        ModerationAction.objects.create(actor=request.user, action="export", target_user=users[0],
                                        reason="data export downloaded in the admin")
        return user_export_response(user=users[0])

    @admin.action(description="Delete account", permissions=["delete"])
    def delete_account(self, request, queryset):
        """Asks first, then deletes each account as its owner would (chat.services.erasure)."""
        users = [user for user in queryset if user.pk != request.user.pk and not erasure.is_stand_in(user)]
        if len(users) < queryset.count():
            self.message_user(request, "Your own account and deleted-user stand-ins are left out.", messages.WARNING)
        if not users:
            return None
        kept = erasure.deletion_mode() == "keep"
        effect = ("Their sockets close now on every instance, their sessions end and they cannot log in again. "
                  + ("Their messages stay, shown as written by a deleted user; their DMs stay readable by the "
                     "other member." if kept else "Their messages are deleted from every room and DM.")
                  + " Their reactions are taken off. This cannot be undone.")

        def apply(reason: str) -> None:
            for user in users:
                try:
                    erasure.user_delete(user=user, actor=request.user, reason=reason)
                except ChatError as exc:
                    self.message_user(request, f"{user.get_username()}: {exc.detail} The account is closed; "
                                      "run the action again to finish.", messages.ERROR)
                except erasure.DeletionRefused as exc:
                    self.message_user(request, f"{user.get_username()}: {exc}", messages.ERROR)

        names = [user.get_username() for user in users]
        carry = {"action": "delete_account", "_selected_action": [str(user.pk) for user in users]}
        return confirmation(self, request, title="Delete account", effect=effect, targets=names, apply=apply,
                            done=f"Account deletion done: {', '.join(names)}.", carry=carry)

    def get_urls(self):
        return [path("<path:object_id>/moderate/<str:kind>/", self.admin_site.admin_view(self.moderate_view),
                     name="chat_user_moderate"), *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        user = self.get_object(request, unquote(object_id))
        if user is not None:
            profile = ChatProfile.objects.filter(user=user).first()
            extra_context = {**(extra_context or {}), "chat_standing": standing(profile) or "in good standing",
                             "moderation_actions": self.moderation_buttons(request, user, profile)}
        return super().change_view(request, object_id, form_url, extra_context)

    def moderation_buttons(self, request, user, profile: ChatProfile | None) -> list[tuple[str, str]]:
        """(label, url) of the actions that make sense for the user now, when the staff member may act."""
        if not self.has_moderate_permission(request):
            return []
        banned = permissions.is_banned(profile)
        muted = profile is not None and permissions.is_muted(profile.muted_until)
        kinds = ["unban" if banned else "ban", *(["unmute"] if muted else []), "mute_hour", "mute_day", "mute"]
        return [(USER_ACTIONS[kind].label, reverse("admin:chat_user_moderate", args=[user.pk, kind]))
                for kind in kinds]

    def moderate_view(self, request, object_id: str, kind: str):
        """Asks, then bans, unbans, mutes or unmutes this user, and goes back to their page."""
        if kind not in USER_ACTIONS:
            raise Http404("No such action.")
        if not self.has_moderate_permission(request):
            raise PermissionDenied
        user = self.get_object(request, unquote(object_id))
        if user is None:
            raise Http404("No such user.")
        response = user_action(self, request, kind=kind, users=[user])
        return response or HttpResponseRedirect(reverse("admin:auth_user_change", args=[user.pk]))


class ChatProfileForm(forms.ModelForm):
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                             help_text="Why: kept in the moderation log.")

    class Meta:
        model = ChatProfile
        fields = ["user", "banned", "muted_until"]


@admin.register(ChatProfile)
class ChatProfileAdmin(admin.ModelAdmin):
    form = ChatProfileForm
    list_display = ["user", "banned", "muted_until"]
    list_filter = ["banned"]
    search_fields = ["user__username"]
    raw_id_fields = ["user"]
    actions = ["ban", "unban", "mute_hour", "mute_day", "mute_indefinitely", "unmute"]

    def save_model(self, request, obj, form, change):
        """Edits of the form go through the services too, so they act live and are logged."""
        reason = form.cleaned_data.get("reason", "")
        previous = ChatProfile.objects.filter(pk=obj.pk).first() if change else None
        banned_before = previous.banned if previous else False
        muted_before = previous.muted_until if previous else None
        if not change:
            super().save_model(request, obj, form, change)
        if obj.banned != banned_before:
            (moderation.user_ban if obj.banned else moderation.user_unban)(actor=request.user, user=obj.user,
                                                                       reason=reason)
        if obj.muted_until != muted_before:
            if obj.muted_until:
                moderation.user_mute(actor=request.user, user=obj.user, until=obj.muted_until, reason=reason)
            else:
                moderation.user_unmute(actor=request.user, user=obj.user, reason=reason)

    def _each(self, request, queryset, action, done: str, **kwargs):
        for profile in queryset.select_related("user"):
            action(actor=request.user, user=profile.user, reason=f"{done} from the profile list", **kwargs)
        self.message_user(request, f"{done.capitalize()}: {queryset.count()} user(s).", messages.SUCCESS)

    @admin.action(description="Ban (their sockets close now, everywhere)", permissions=["change"])
    def ban(self, request, queryset):
        self._each(request, queryset, moderation.user_ban, "banned")

    @admin.action(description="Unban", permissions=["change"])
    def unban(self, request, queryset):
        self._each(request, queryset, moderation.user_unban, "unbanned")

    @admin.action(description="Mute for 1 hour", permissions=["change"])
    def mute_hour(self, request, queryset):
        until = timezone.now() + timedelta(hours=1)
        self._each(request, queryset, moderation.user_mute, "muted for an hour", until=until)

    @admin.action(description="Mute for 24 hours", permissions=["change"])
    def mute_day(self, request, queryset):
        until = timezone.now() + timedelta(days=1)
        self._each(request, queryset, moderation.user_mute, "muted for a day", until=until)

    @admin.action(description="Mute indefinitely", permissions=["change"])
    def mute_indefinitely(self, request, queryset):
        self._each(request, queryset, moderation.user_mute, "muted indefinitely")

    @admin.action(description="Unmute", permissions=["change"])
    def unmute(self, request, queryset):
        self._each(request, queryset, moderation.user_unmute, "unmuted")


