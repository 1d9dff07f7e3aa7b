"""Rooms and their members in the admin."""

from django.conf import settings
from django.contrib import admin

from chat.models import Membership, Room


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
    list_display = ["name", "slug", "private", "owner", "retention", "created_at"]
    search_fields = ["name", "slug"]
    list_filter = ["private"]
    raw_id_fields = ["owner"]
    inlines = [MembershipInline]

    @admin.display(description="retention", ordering="retention_days")
    def retention(self, room: Room) -> str:
        if room.retention_days is None:
            return f"global ({_days(settings.CHAT_RETENTION_DAYS)})"
        return _days(room.retention_days)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "retention_days":
            formfield.help_text = (
                "Days this room keeps its messages, shorter or longer than the global CHAT_RETENTION_DAYS (now: "
                f"{_days(settings.CHAT_RETENTION_DAYS)}); empty: the global; 0: for ever. manage.py prune_messages "
                "deletes older ones.")
        return formfield


def _days(days: int | None) -> str:
    return f"{days} days" if days and days > 0 else "for ever"


