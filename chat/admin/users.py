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
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone

from chat import permissions
from chat.admin.confirm import USER_ACTIONS, UserModerationActions, user_action
from chat.models import ChatProfile
from chat.services import moderation

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
    actions = UserModerationActions.user_actions

    def moderation_users(self, queryset) -> list:
        return list(queryset)

    @admin.display(description="chat standing")
    def chat_standing(self, user) -> str:
        return standing(getattr(user, "chat_profile", None))

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


