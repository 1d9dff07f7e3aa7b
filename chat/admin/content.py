"""Messages and reports in the admin. The message list shows the messages of rooms the staff member
may read, plus reported ones for staff who may act on reports; a reported body from a room they
cannot read is logged as a `view` each time it is shown. Acting on a message's author or a
report's message goes through the moderation services."""

from datetime import timedelta

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from chat import permissions
from chat.admin.attachments import message_attachments, message_reactions
from chat.admin.confirm import USER_ACTIONS, UserModerationActions, confirmation
from chat.models import Message, Report
from chat.services import moderation


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
class MessageAdmin(UserModerationActions, admin.ModelAdmin):
    list_display = ["room", "seq", "author", "short_body", "created_at", "hidden", "deleted"]
    list_filter = ["room", MessageStateFilter, "created_at"]
    search_fields = ["body", "author__username"]
    date_hierarchy = "created_at"
    list_select_related = ["room", "author"]
    readonly_fields = ["id", "room", "seq", "author", "body", "created_at", "edited_at", "client_id", "hidden",
                       "deleted"]
    actions = ["hide_messages", "unhide_messages", *UserModerationActions.user_actions]

    def get_queryset(self, request):
        return super().get_queryset(request) & permissions.moderation_messages(request.user)

    def moderation_users(self, queryset) -> list:
        return list({message.author_id: message.author for message in queryset.select_related("author")}.values())

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:
            moderation.reported_messages_viewed(actor=request.user, messages=list(changelist.result_list),
                                                where="the admin's message list")
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        message = self.get_object(request, unquote(object_id))
        if request.method == "GET" and message is not None:
            moderation.reported_messages_viewed(actor=request.user, messages=[message], where="the message's page")
            extra_context = {**(extra_context or {}), "reactions": message_reactions(message),
                             "attachments": message_attachments(request, message)}
        return super().change_view(request, object_id, form_url, extra_context)

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


def _in_hours(hours: int):
    return timezone.now() + timedelta(hours=hours)


# What a report's page offers: (button, what happens, permission needed, the service call).
REPORT_ACTIONS = {
    "hide": ("Hide the message", "The message disappears from every connected client and from history; "
             "the report is resolved.", "hide",
             lambda actor, report, reason: moderation.report_resolve(actor=actor, report=report, hide=True,
                                                                     reason=reason)),
    "ban": ("Ban the author", USER_ACTIONS["ban"].effect + " The report is resolved.", "moderate",
            lambda actor, report, reason: moderation.report_author_ban(actor=actor, report=report, reason=reason)),
    "mute_hour": ("Mute the author for 1 hour", USER_ACTIONS["mute_hour"].effect + " The report is resolved.",
                  "moderate", lambda actor, report, reason: moderation.report_author_mute(
                      actor=actor, report=report, until=_in_hours(1), reason=reason)),
    "mute_day": ("Mute the author for 24 hours", USER_ACTIONS["mute_day"].effect + " The report is resolved.",
                 "moderate", lambda actor, report, reason: moderation.report_author_mute(
                     actor=actor, report=report, until=_in_hours(24), reason=reason)),
    "mute": ("Mute the author until lifted", USER_ACTIONS["mute"].effect + " The report is resolved.", "moderate",
             lambda actor, report, reason: moderation.report_author_mute(actor=actor, report=report, reason=reason)),
    "dismiss": ("Dismiss", "The report is resolved and the message stays as it is.", "change",
                lambda actor, report, reason: moderation.report_resolve(actor=actor, report=report, hide=False,
                                                                        reason=reason)),
}


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["created_at", "message_link", "message_author", "reporter", "reason", "resolved"]
    list_filter = ["resolved", "created_at"]
    search_fields = ["reason", "message__body", "reporter__username"]
    list_select_related = ["message__author", "reporter"]
    readonly_fields = ["message", "reporter", "reason", "created_at", "resolved"]
    actions = ["hide_and_resolve", "ban_authors", "mute_authors_day", "resolve"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(message__in=permissions.moderation_messages(request.user))

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        return lookup == "message__room__id__exact" or super().lookup_allowed(lookup, value, request)

    def get_urls(self):
        return [path("<path:object_id>/act/<str:kind>/", self.admin_site.admin_view(self.act_view),
                     name="chat_report_act"), *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The report's page shows the conversation around the message to who may act on it (logged),
        and the buttons for what they may do about it."""
        report = self.get_object(request, unquote(object_id))
        extra_context = dict(extra_context or {})
        if request.method == "GET" and report is not None and permissions.can_read_reported(request.user):
            extra_context["conversation"] = moderation.report_view(actor=request.user, report=report)
            extra_context["reactions"] = message_reactions(report.message)
            extra_context["attachments"] = message_attachments(request, report.message)
        if report is not None and not report.resolved:
            extra_context["report_actions"] = self.report_actions(request, report)
        return super().change_view(request, object_id, form_url, extra_context)

    def report_actions(self, request, report: Report) -> list[tuple[str, str]]:
        """(label, url) of each action on `report` the staff member may take."""
        return [(label, reverse("admin:chat_report_act", args=[report.pk, kind]))
                for kind, (label, _, permission, _) in REPORT_ACTIONS.items()
                if getattr(self, f"has_{permission}_permission")(request)]

    def act_view(self, request, object_id: str, kind: str):
        """Asks, then takes one of REPORT_ACTIONS on the report, and goes back to the report list."""
        if kind not in REPORT_ACTIONS:
            raise Http404("No such action.")
        label, effect, permission, act = REPORT_ACTIONS[kind]
        if not getattr(self, f"has_{permission}_permission")(request):
            raise PermissionDenied
        report = self.get_object(request, unquote(object_id))
        if report is None:
            raise Http404("No such report.")
        if report.resolved:
            self.message_user(request, "This report is already resolved.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:chat_report_changelist"))
        author = report.message.author.get_username()
        response = confirmation(self, request, title=label, effect=effect,
                                targets=[f"report #{report.pk} on a message by {author}: {report.reason}"],
                                apply=lambda reason: act(request.user, report, reason),
                                done=f"{label}: done (report #{report.pk}).")
        return response or HttpResponseRedirect(reverse("admin:chat_report_changelist"))

    def has_hide_permission(self, request) -> bool:
        return self.has_change_permission(request) and request.user.has_perm("chat.change_message")

    def has_moderate_permission(self, request) -> bool:
        return self.has_change_permission(request) and request.user.has_perm("chat.change_chatprofile")

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

    @admin.action(description="Ban the authors and resolve", permissions=["moderate"])
    def ban_authors(self, request, queryset):
        return self._on_authors(request, queryset, "ban", "ban_authors")

    @admin.action(description="Mute the authors for 24 hours and resolve", permissions=["moderate"])
    def mute_authors_day(self, request, queryset):
        return self._on_authors(request, queryset, "mute_day", "mute_authors_day")

    def _on_authors(self, request, queryset, kind: str, name: str):
        reports = list(queryset.select_related("message__author", "reporter").filter(resolved=False))
        label, effect, _, act = REPORT_ACTIONS[kind]

        def apply(reason: str) -> None:
            for report in reports:
                act(request.user, report, reason)

        return confirmation(self, request, title=label.replace("the author", "the authors"), effect=effect,
                            targets=sorted({r.message.author.get_username() for r in reports}), apply=apply,
                            done=f"{label}: done for {len(reports)} report(s).",
                            carry={"action": name, "_selected_action": [str(r.pk) for r in reports]})

    @admin.action(description="Dismiss (resolve, keep the message)", permissions=["change"])
    def resolve(self, request, queryset):
        for report in queryset.select_related("message", "reporter").filter(resolved=False):
            moderation.report_resolve(actor=request.user, report=report, hide=False)
        self.message_user(request, "Reports resolved.", messages.SUCCESS)

    def has_add_permission(self, request) -> bool:
        return False
