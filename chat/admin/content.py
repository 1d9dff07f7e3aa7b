"""The staff's moderation desk. Every moderation action goes through a service, which records it
and makes it take effect live on every instance; nothing here changes chat state by hand. Actions
need Django's change permission on their model; bodies of conversations the user cannot read are
shown only when reported, to staff who may act on reports (permissions.moderation_messages)."""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.utils import timezone
from django.utils.html import format_html

from chat import permissions
from chat.models import ChatProfile, Membership, Message, ModerationAction, Report, Room
from chat.services import moderation


class MembershipInline(admin.TabularInline):
    """A room's members. A DM's are its pair (as in services.rooms): staff cannot join it from here."""

    model = Membership
    extra = 0
    raw_id_fields = ["user"]

    def has_add_permission(self, request, obj=None) -> bool:
        return not (obj is not None and obj.direct_key) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return not (obj is not None and obj.direct_key) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return not (obj is not None and obj.direct_key) and super().has_delete_permission(request, obj)


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "private", "owner", "created_at"]
    search_fields = ["name", "slug"]
    list_filter = ["private"]
    raw_id_fields = ["owner"]
    inlines = [MembershipInline]


class MessageStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("visible", "Visible"), ("hidden", "Hidden by staff"), ("deleted", "Deleted by author")]

    def queryset(self, request, queryset):
        if self.value() == "visible":
            return queryset.filter(hidden=False, deleted=False)
        if self.value() in ("hidden", "deleted"):
            return queryset.filter(**{self.value(): True})
        return queryset


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "seq", "author", "short_body", "created_at", "hidden", "deleted"]
    list_filter = ["room", MessageStateFilter, "created_at"]
    search_fields = ["body", "author__username"]
    date_hierarchy = "created_at"
    list_select_related = ["room", "author"]
    readonly_fields = ["id", "room", "seq", "author", "body", "created_at", "edited_at", "client_id", "hidden",
                       "deleted"]
    actions = ["hide_messages", "unhide_messages"]

    def get_queryset(self, request):
        return super().get_queryset(request) & permissions.moderation_messages(request.user)

    @admin.display(description="body")
    def short_body(self, message: Message) -> str:
        return message.body if len(message.body) <= 80 else message.body[:79] + "…"

    @admin.action(description="Hide the selected messages (removed from every client now)", permissions=["change"])
    def hide_messages(self, request, queryset):
        for message in queryset.select_related("room", "author").filter(hidden=False):
            moderation.message_hide(actor=request.user, message=message, reason="hidden from the message list")
        self.message_user(request, "Hidden; connected clients no longer show them.", messages.SUCCESS)

    @admin.action(description="Unhide the selected messages", permissions=["change"])
    def unhide_messages(self, request, queryset):
        for message in queryset.select_related("room", "author").filter(hidden=True):
            moderation.message_unhide(actor=request.user, message=message, reason="unhidden from the message list")
        self.message_user(request, "Unhidden; they are back in history.", messages.SUCCESS)

    def has_add_permission(self, request) -> bool:
        return False  # messages come from the chat, never from the admin

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # hide instead: a deleted row would leave clients and Kafka out of step


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["created_at", "message_link", "message_author", "reporter", "reason", "resolved"]
    list_filter = ["resolved", "created_at"]
    search_fields = ["reason", "message__body", "reporter__username"]
    list_select_related = ["message__author", "reporter"]
    readonly_fields = ["message", "reporter", "reason", "created_at", "resolved"]
    actions = ["hide_and_resolve", "resolve"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(message__in=permissions.moderation_messages(request.user))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The report's page shows the conversation around the message to who may act on it (logged)."""
        report = self.get_object(request, unquote(object_id))
        if request.method == "GET" and report is not None and permissions.can_read_reported(request.user):
            extra_context = {**(extra_context or {}),
                             "conversation": moderation.report_view(actor=request.user, report=report)}
        return super().change_view(request, object_id, form_url, extra_context)

    def has_hide_permission(self, request) -> bool:
        return self.has_change_permission(request) and request.user.has_perm("chat.change_message")

    @admin.display(description="message")
    def message_link(self, report: Report) -> str:
        url = f"../message/{report.message_id}/change/"
        body = report.message.body if len(report.message.body) <= 60 else report.message.body[:59] + "…"
        return format_html('<a href="{}">{}</a>', url, body)

    @admin.display(description="author")
    def message_author(self, report: Report) -> str:
        return report.message.author.username

    @admin.action(description="Hide the message and resolve", permissions=["hide"])
    def hide_and_resolve(self, request, queryset):
        for report in queryset.select_related("message__room", "message__author", "reporter").filter(resolved=False):
            moderation.report_resolve(actor=request.user, report=report, hide=True)
        self.message_user(request, "Messages hidden and reports resolved.", messages.SUCCESS)

    @admin.action(description="Resolve (keep the message)", permissions=["change"])
    def resolve(self, request, queryset):
        for report in queryset.select_related("message", "reporter").filter(resolved=False):
            moderation.report_resolve(actor=request.user, report=report, hide=False)
        self.message_user(request, "Reports resolved.", messages.SUCCESS)

    def has_add_permission(self, request) -> bool:
        return False


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


@admin.register(ModerationAction)
class ModerationActionAdmin(admin.ModelAdmin):
    """The moderation log: read-only, newest first."""

    list_display = ["created_at", "actor", "action", "target_user", "target_message", "reason"]
    list_filter = ["action", "created_at"]
    search_fields = ["actor__username", "target_user__username", "reason"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
