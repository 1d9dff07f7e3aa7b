"""The moderation desk (/admin/chat/desk/): what needs attention on one page. Open reports, oldest
first; recent moderation actions; users banned or muted now, with the time left; the rooms with
the most reports this week. Every line links to where staff act on it, and action links are
offered only to staff who may take them. It never shows the body of a message in a room the staff
member cannot read: a reported one is read on its report's page, where the view is logged."""

from datetime import timedelta

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from chat import permissions
from chat.admin.users import standing
from chat.models import Attachment, ChatProfile, Message, ModerationAction, Report, Room

OPEN_REPORTS = 50
RECENT_ACTIONS = 20
TOP_ROOMS = 10


def _admin_for(model) -> admin.ModelAdmin:
    return admin.site._registry[model]


def open_reports(request) -> list[dict]:
    """Open reports the staff member may see (as the report list does), oldest first, with the
    reported body only where they may read the room."""
    report_admin = _admin_for(Report)
    readable = set(permissions.readable_rooms(request.user).values_list("pk", flat=True))
    reports = (report_admin.get_queryset(request).filter(resolved=False)
               .select_related("message__room", "message__author", "reporter").order_by("created_at")[:OPEN_REPORTS])
    reports = list(reports)
    files = dict(Attachment.objects.filter(message_id__in=[r.message_id for r in reports], removed=False)
                 .values("message_id").annotate(n=Count("pk")).values_list("message_id", "n"))
    rows = []
    for report in reports:
        message = report.message
        readable_here = message.room_id in readable
        rows.append({
            "report": report, "room": message.room, "author": message.author,
            "body": message.body if readable_here else None,
            # What else it carries, where the body is shown: attachments and reactions are on the report's page.
            "files": files.get(message.pk, 0) if readable_here else 0,
            "reactions": sum(r.get("count", 0) for r in message.reactions or [] if isinstance(r, dict))
            if readable_here else 0,
            "url": reverse("admin:chat_report_change", args=[report.pk]),
            "author_url": reverse("admin:auth_user_change", args=[message.author_id]),
            "actions": report_admin.report_actions(request, report),
        })
    return rows


def recent_actions() -> list[dict]:
    """The latest actions taken; views of reported conversations are in the log, not here."""
    actions = (ModerationAction.objects.exclude(action__in=["view", "view message"])
               .select_related("actor", "target_user").order_by("-created_at")[:RECENT_ACTIONS])
    return [{"action": action,
             "user_url": reverse("admin:auth_user_change", args=[action.target_user_id])
             if action.target_user_id else None}
            for action in actions]


def restricted_users(request) -> list[dict]:
    """Users banned or muted now, those whose mute ends first first."""
    now = timezone.now()
    profiles = (ChatProfile.objects.filter(Q(banned=True) | Q(muted_until__gt=now)).select_related("user")
                .order_by("muted_until", "user__username"))
    user_admin = _admin_for(get_user_model())
    return [{"user": profile.user, "standing": standing(profile, now),
             "url": reverse("admin:auth_user_change", args=[profile.user_id]),
             "actions": [(label, url) for label, url in user_admin.moderation_buttons(request, profile.user, profile)
                         if label in ("Unban", "Unmute")]}
            for profile in profiles[:100]]


def busiest_rooms(request) -> list[dict]:
    """The rooms with the most reports in the last 7 days, among the reports the staff member may see."""
    since = timezone.now() - timedelta(days=7)
    counts = (_admin_for(Report).get_queryset(request).filter(created_at__gte=since)
              .values("message__room").annotate(reports=Count("pk")).order_by("-reports")[:TOP_ROOMS])
    rooms = Room.objects.in_bulk([row["message__room"] for row in counts])
    changelist = reverse("admin:chat_report_changelist")
    return [{"room": rooms[row["message__room"]], "reports": row["reports"],
             "url": f"{changelist}?message__room__id__exact={row['message__room']}"}
            for row in counts]


def desk(request):
    """The desk, for staff who may see reports; each part is shown to who may see its list."""
    report_admin = _admin_for(Report)
    if not report_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    context = {
        **admin.site.each_context(request),
        "title": "Moderation desk",
        "reports": open_reports(request),
        "rooms": busiest_rooms(request),
        "opts": Message._meta,
    }
    if _admin_for(ModerationAction).has_view_permission(request):
        context["actions"] = recent_actions()
    if _admin_for(ChatProfile).has_view_or_change_permission(request):
        context["restricted"] = restricted_users(request)
    return TemplateResponse(request, "admin/chat/desk.html", context)
