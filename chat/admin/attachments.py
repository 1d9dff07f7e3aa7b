"""Attachments in the admin: the uploads of rooms the staff member may read (and those of reported
messages, for staff who may act on reports), and their removal, which goes through
chat.services.attachments.attachment_remove (files deleted, logged, gone live from the message).
Also what a message carries, for the message's and a report's pages: reactions and attachments."""

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.urls import path, reverse
from django.utils.http import urlencode

from chat import permissions
from chat.admin.confirm import confirmation
from chat.models import Attachment, Message, Report
from chat.services.attachments import attachment_object, attachment_remove

REMOVE_EFFECT = ("The file and its thumbnail are deleted from storage; the message that carries it (if any) "
                 "shows it as removed on every client. The removal goes in the moderation log.")


def _describe(attachment: Attachment) -> str:
    return (f"{attachment.name} ({attachment.content_type}, {filesizeformat(attachment.size)}) "
            f"uploaded by {attachment.uploader.get_username()}")


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    list_display = ["name", "room", "uploader", "size", "content_type", "message_id", "removed", "created_at"]
    list_filter = ["removed", "content_type", "created_at"]
    search_fields = ["name", "uploader__username"]
    list_select_related = ["room", "uploader"]
    readonly_fields = ["id", "room", "uploader", "name", "size", "content_type", "file", "thumbnail", "width",
                       "height", "message_id", "client_id", "removed", "created_at"]
    actions = ["remove_attachments"]

    def get_queryset(self, request):
        readable = Q(room__in=permissions.readable_rooms(request.user).values("pk"))
        if permissions.can_read_reported(request.user):
            readable |= Q(message_id__in=Report.objects.values("message_id"))
        return super().get_queryset(request).filter(readable)

    def get_urls(self):
        return [path("<path:object_id>/remove/", self.admin_site.admin_view(self.remove_view),
                     name="chat_attachment_remove"), *super().get_urls()]

    def remove_view(self, request, object_id: str):
        """Asks, then removes one attachment (the Remove button on a report's or a message's page)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        attachment = self.get_object(request, unquote(object_id))
        if attachment is None or attachment.removed:
            raise Http404("No such attachment, or removed already.")
        response = confirmation(self, request, title="Remove attachment", effect=REMOVE_EFFECT,
                                targets=[_describe(attachment)],
                                apply=lambda reason: attachment_remove(actor=request.user, attachment=attachment,
                                                                       reason=reason),
                                done=f"Removed {attachment.name}.")
        back = request.GET.get("next") or reverse("admin:chat_attachment_changelist")
        return response or HttpResponseRedirect(back if back.startswith("/") and not back.startswith("//") else "/")

    @admin.action(description="Remove the selected attachments", permissions=["change"])
    def remove_attachments(self, request, queryset):
        attachments = list(queryset.select_related("uploader").filter(removed=False))

        def apply(reason: str) -> None:
            for attachment in attachments:
                attachment_remove(actor=request.user, attachment=attachment, reason=reason)

        return confirmation(self, request, title="Remove attachments", effect=REMOVE_EFFECT,
                            targets=[_describe(a) for a in attachments], apply=apply,
                            done=f"Removed {len(attachments)} attachment(s).",
                            carry={"action": "remove_attachments",
                                   "_selected_action": [str(a.pk) for a in attachments]})

    def has_add_permission(self, request) -> bool:
        return False  # uploads come from the chat

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # remove instead: a deleted row would leave the file in storage and in messages


def message_attachments(request, message: Message) -> list[dict]:
    """The message's attachments with their download links (through /files/, checked as for anyone)
    and, for staff who may change attachments, a Remove link that comes back to `request`'s page."""
    may_remove = admin.site._registry[Attachment].has_change_permission(request)
    rows = []
    for attachment in Attachment.objects.filter(message_id=message.pk).order_by("created_at"):
        row = {"attachment": attachment, **attachment_object(attachment), "remove_url": None}
        if may_remove and not attachment.removed:
            row["remove_url"] = (reverse("admin:chat_attachment_remove", args=[attachment.pk]) + "?"
                                 + urlencode({"next": request.path}))
        rows.append(row)
    return rows


def message_reactions(message: Message) -> list[dict]:
    """The message's reactions as stored: emoji, count and who."""
    return [{"emoji": r.get("emoji", ""), "count": r.get("count", 0), "users": r.get("users", [])}
            for r in message.reactions or [] if isinstance(r, dict)]
